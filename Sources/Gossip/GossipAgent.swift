import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The I/O shell around `SwimNode`: one UDP socket and one TCP listener on the gossip port, both
/// carrying AES-GCM sealed frames (`WireCodec`), and a timer.
///
/// - Datagrams (probes, acks, gossip) never exceed `SwimSettings.maxDatagramBytes`; the receive
///   buffer is one byte larger, so a longer datagram is seen as truncated and counted, never
///   half-read.
/// - Full state exchanges and fetches of large entries go over TCP to the peer's gossip port, one
///   request and one answer per connection, each frame capped at `SwimSettings.maxStreamBytes`.
/// - Every frame passes the keyring, then the `ReplayGuard`; what fails is dropped and counted by
///   reason and sender, and keys that do not match are logged with the sender's address.
/// - A socket that closes or fails is logged at error level, counted and bound again on the same
///   port; `isSocketUp` says so meanwhile.
///
/// Run it as a swift-service-lifecycle service: on graceful shutdown it announces that it leaves,
/// so no peer suspects it.
public actor GossipAgent: Service {
    /// Why a received frame was dropped.
    public enum DropReason: String, Sendable, CaseIterable {
        /// Longer than the datagram limit (the tail was cut off).
        case truncated
        /// No key in the ring opened it.
        case forged
        /// Opened but did not decode, or a state transfer arrived as a datagram.
        case malformed
        /// Seen before, or from an earlier life of its sender.
        case replayed
        /// Older than the replay window by its sender's clock.
        case stale
    }

    /// Counters for `/metrics` and the admin API.
    public struct Stats: Sendable, Hashable {
        public var received = 0
        public var sent = 0
        /// Every frame dropped, whatever the reason.
        public var dropped = 0
        public var droppedByReason: [DropReason: Int] = [:]
        /// Dropped frames by sender address (`host:port`; at most 256 senders, then `other`).
        public var droppedBySender: [String: Int] = [:]
        /// Datagrams the socket refused to send (EPERM from a firewall, unreachable networks, …).
        public var sendErrors = 0
        /// Times the UDP socket failed or closed and was bound again.
        public var socketFailures = 0
        /// TCP state transfers answered and made, and those that failed.
        public var streamsServed = 0
        public var streamsOpened = 0
        public var streamFailures = 0
    }

    /// Which key this node sends with, which it accepts, and what each peer was last seen sending with.
    public struct KeyringStatus: Sendable, Hashable {
        public var primary: String
        public var accepted: [String]
        /// Node id → key id of its latest datagram that this node could open.
        public var peers: [String: String]
    }

    private var node: SwimNode
    private let settings: SwimSettings
    private let seeds: [MemberAddress]
    private let bind: MemberAddress
    private var keyring: ClusterKeyring
    private let keyringPath: String?
    private let keyringReload: KeyringReloadRequests?
    private let logger: Logger
    private let onMemberChange: @Sendable (Member) -> Void
    private let onStateChange: @Sendable (StateEntry, UInt64) -> Void
    private let onStateRemoved: @Sendable (String) -> Void
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private let epoch: UInt64
    private var frameSequence: UInt64 = 0
    private var replayGuard: ReplayGuard
    private var udp: GossipSocket?
    private var udpChannel: (any Channel)?
    private var resolved: [MemberAddress: SocketAddress] = [:]
    private var peerKeys: [String: String] = [:]
    private var lastLogged: [String: ContinuousClock.Instant] = [:]
    private var exchanges: AsyncStream<(GossipMessage, MemberAddress)>.Continuation?
    public private(set) var stats = Stats()
    private let boundPortBox = NIOLockedValueBox<Int?>(nil)
    private let joinedBox = NIOLockedValueBox(false)
    private let socketUpBox = NIOLockedValueBox(false)
    private let conflictBox = NIOLockedValueBox<Member?>(nil)
    private let group: MultiThreadedEventLoopGroup = .singleton

    /// - Parameters:
    ///   - myself: this node; its incarnation should be its boot time in milliseconds (it is also
    ///     the epoch its frames carry).
    ///   - bind: where to listen, UDP and TCP (`--gossip-bind`); `myself.address` is what peers are told.
    ///   - keyringPath: re-read every 10 s, so a rotated key file takes effect without a restart.
    public init(
        myself: Member, bind: MemberAddress, seeds: [MemberAddress], keyring: ClusterKeyring, keyringPath: String? = nil,
        keyringReload: KeyringReloadRequests? = nil, settings: SwimSettings = SwimSettings(), logger: Logger,
        onMemberChange: @escaping @Sendable (Member) -> Void = { _ in },
        onStateChange: @escaping @Sendable (StateEntry, UInt64) -> Void = { _, _ in },
        onStateRemoved: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        node = SwimNode(myself: myself, settings: settings, seed: UInt64.random(in: 0...UInt64.max))
        self.settings = settings
        self.bind = bind
        self.seeds = seeds
        self.keyring = keyring
        self.keyringPath = keyringPath
        self.keyringReload = keyringReload
        self.logger = logger
        self.onMemberChange = onMemberChange
        self.onStateChange = onStateChange
        self.onStateRemoved = onStateRemoved
        epoch = myself.incarnation
        replayGuard = ReplayGuard(windowMillis: SwimNode.millis(settings.replayWindow))
        started = clock.now
    }

    // MARK: Views (safe from any thread)

    /// The port actually bound (useful with port 0), once running.
    public nonisolated var boundPort: Int? { boundPortBox.withLockedValue { $0 } }
    /// True once a state exchange with a member succeeded (or there were no seeds).
    public nonisolated var isJoined: Bool { joinedBox.withLockedValue { $0 } }
    /// False while the UDP socket is down (between a failure and the rebind).
    public nonisolated var isSocketUp: Bool { socketUpBox.withLockedValue { $0 } }
    /// A live member that claims this node's id from another address, if one was seen.
    public nonisolated var conflict: Member? { conflictBox.withLockedValue { $0 } }

    public var members: [Member] { node.allMembers }
    public var myself: Member { node.myself }
    public var stateEntries: [StateEntry] { node.state.values.sorted { $0.key < $1.key } }
    public var awareness: Int { node.awareness }
    public var queuedUpdates: Int { node.queuedUpdates }

    /// How long ago each entry was written, in milliseconds, on this node's clock.
    public func stateAges() -> [String: UInt64] {
        var ages: [String: UInt64] = [:]
        for key in node.state.keys { ages[key] = node.ageMillis(of: key, now: now) }
        return ages
    }

    public var keyringStatus: KeyringStatus {
        KeyringStatus(primary: keyring.primaryKeyID, accepted: keyring.keyIDStrings, peers: peerKeys)
    }

    /// Each peer's clock as this node sees it: this node's clock minus the peer's, in
    /// milliseconds (network delay included), from its newest frame.
    public func clockOffsets() -> [String: Int64] {
        var offsets: [String: Int64] = [:]
        for member in node.members.values {
            if let offset = replayGuard.clockOffset(of: member.id) { offsets[member.id] = offset }
        }
        return offsets
    }

    /// How far this node's clock is ahead of the cluster's: the median of its offsets to every
    /// peer it has heard from, itself counted as zero (with an even count, the middle value
    /// nearer zero). Writes of shared entries are stamped with the corrected time.
    public func clockSkewMillis() -> Int64 {
        let values = (Array(clockOffsets().values) + [0]).sorted()
        if values.count % 2 == 1 { return values[values.count / 2] }
        let (low, high) = (values[values.count / 2 - 1], values[values.count / 2])
        return abs(low) <= abs(high) ? low : high
    }

    /// Sets a replicated state entry (health, a routing table, a counter) and gossips it.
    public func publish(key: String, value: String, urgent: Bool = false) async {
        let wall = Int64(Date().timeIntervalSince1970 * 1000) - clockSkewMillis()
        await perform(node.publish(key: key, value: value, wallClockMillis: UInt64(max(0, wall)), now: now, urgent: urgent))
    }

    /// Loads state saved by an earlier run (see `SwimNode.restore`).
    public func restore(_ entries: [StateEntry]) async {
        await perform(node.restore(entries, now: now))
    }

    // MARK: Running

    public func run() async throws {
        let firstSocket = try await bindDatagram()
        boundPortBox.withLockedValue { $0 = firstSocket.channel.localAddress?.port }
        let listener = try await bindStream()
        logger.info(
            "gossip listening",
            metadata: [
                "address": "\(bind.host):\(boundPort ?? bind.port)", "node": "\(node.myself.id)",
                "max_datagram": "\(settings.maxDatagramBytes)",
            ])
        let (jobs, continuation) = AsyncStream<(GossipMessage, MemberAddress)>.makeStream(bufferingPolicy: .bufferingNewest(256))
        exchanges = continuation
        await perform(node.join(seeds: seeds, now: now))
        publishViews()
        // On graceful shutdown: leave (so nobody suspects us), then stop; on cancellation: stop.
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.datagramLoop(first: firstSocket) }
                group.addTask { await self.streamServer(listener) }
                group.addTask { await self.exchangeLoop(jobs) }
                group.addTask { await self.tickLoop() }
                group.addTask { await self.keyringLoop() }
                if let requests = self.keyringReload {
                    group.addTask { for await _ in requests.stream { await self.reloadKeyring() } }
                }
                await self.waitUntilLeft()
                // Let the farewell datagrams leave before the socket closes.
                try? await Task.sleep(for: .milliseconds(50))
                continuation.finish()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            Task { await self.leave() }
        }
        try? await listener.channel.close()
    }

    private var left = false
    private var leaveWaiters: [CheckedContinuation<Void, Never>] = []

    /// Announces that this node is draining (`leaving`): peers stop forwarding to it, and it will
    /// be `left`, never `dead`, however long the drain takes.
    public func startLeaving() async {
        await perform(node.startLeaving(now: now))
    }

    /// Announces `left` to every live member, then lets `run` return.
    public func leave() async {
        guard !left else { return }
        await perform(node.leave(now: now))
        left = true
        for waiter in leaveWaiters { waiter.resume() }
        leaveWaiters = []
    }

    private func waitUntilLeft() async {
        if left || Task.isCancelled { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { leaveWaiters.append($0) }
        } onCancel: {
            Task { await self.cancelWaiters() }
        }
    }

    private func cancelWaiters() {
        left = true
        for waiter in leaveWaiters { waiter.resume() }
        leaveWaiters = []
    }

    private var now: Duration { clock.now - started }

    private func publishViews() {
        joinedBox.withLockedValue { $0 = node.joined }
        conflictBox.withLockedValue { $0 = node.conflict }
    }

    private var lastSocketCheck = ContinuousClock.now

    private func tickLoop() async {
        while !Task.isCancelled && !left {
            try? await Task.sleep(for: .milliseconds(10))
            await perform(node.tick(now: now))
            publishViews()
            if clock.now - lastSocketCheck >= .seconds(1) {
                lastSocketCheck = clock.now
                await checkSocket()
                let skew = clockSkewMillis()
                if abs(skew) > 5_000 {
                    logRateLimited(
                        "skew",
                        "this node's clock differs from the cluster's; shared entries are stamped with the cluster's time, but fix the clock (NTP)",
                        level: .warning, metadata: ["ahead_ms": "\(skew)"])
                }
            }
        }
    }

    private func keyringLoop() async {
        guard keyringPath != nil else { return }
        while !Task.isCancelled && !left {
            try? await Task.sleep(for: .seconds(10))
            reloadKeyring()
        }
    }

    /// Re-reads the key file: every 10 s, and at once on request (SIGHUP, systemd's ExecReload).
    private func reloadKeyring() {
        guard let keyringPath, !left else { return }
        do {
            let reloaded = try ClusterKeyring(contentsOfFile: keyringPath)
            if reloaded.keyIDStrings != keyring.keyIDStrings {
                logger.notice(
                    "cluster key file changed",
                    metadata: [
                        "sending_with": "\(reloaded.primaryKeyID)", "accepting": "\(reloaded.keyIDStrings.joined(separator: ","))",
                    ])
            }
            keyring = reloaded
        } catch {
            logger.error("cannot reload the cluster key file; keeping the current keys", metadata: ["error": "\(error)"])
        }
    }

    // MARK: UDP

    private typealias DatagramChannel = NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>

    private func bindDatagram() async throws -> DatagramChannel {
        let address = try SocketAddress.makeAddressResolvingHost(bind.host, port: boundPort ?? bind.port)
        let socket = try GossipSocket(binding: address)
        let channel: DatagramChannel
        do {
            let plain = try await DatagramBootstrap(group: group)
                // One byte more than the limit: a longer datagram shows up as truncated instead of being cut silently.
                .channelOption(
                    ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: settings.maxDatagramBytes + 1)
                )
                .withBoundSocket(socket.readDescriptor).get()  // (the async variant fails to register an adopted socket)
            channel = try await plain.eventLoop.submit { try DatagramChannel(wrappingChannelSynchronously: plain) }.get()
        } catch {
            socket.close()
            throw error
        }
        udp = socket
        udpChannel = channel.channel
        return channel
    }

    /// Closes the socket when its send descriptor no longer names it (closed under the process):
    /// the read loop then logs the failure and binds again.
    private func checkSocket() async {
        guard let udp, !udp.isIntact else { return }
        logger.error("the gossip socket was closed under the node", metadata: ["port": "\(boundPort ?? bind.port)"])
        socketUpBox.withLockedValue { $0 = false }
        self.udp = nil
        try? await udpChannel?.close()
    }

    /// Reads datagrams; when the socket fails or closes, logs it, counts it and binds the same
    /// port again (backing off to 1 s while binding fails).
    private func datagramLoop(first: DatagramChannel) async {
        var channel: DatagramChannel? = first
        var backoff = Duration.milliseconds(200)
        while !Task.isCancelled && !left {
            if let current = channel {
                socketUpBox.withLockedValue { $0 = true }
                var failure: (any Error)?
                do {
                    try await current.executeThenClose { inbound, _ in
                        for try await envelope in inbound { await self.handle(envelope) }
                    }
                } catch {
                    failure = error
                }
                udp?.close()
                udp = nil
                udpChannel = nil
                channel = nil
                if Task.isCancelled || left { break }
                socketUpBox.withLockedValue { $0 = false }
                stats.socketFailures += 1
                logger.error(
                    "gossip socket closed; binding it again",
                    metadata: [
                        "port": "\(boundPort ?? bind.port)", "error": "\(failure.map { "\($0)" } ?? "closed")",
                    ])
            }
            try? await Task.sleep(for: backoff)
            do {
                channel = try await bindDatagram()
                backoff = .milliseconds(200)
                logger.notice("gossip socket bound again", metadata: ["port": "\(boundPort ?? bind.port)"])
            } catch {
                backoff = min(backoff * 2, .seconds(1))
                logger.error("cannot bind the gossip socket", metadata: ["port": "\(boundPort ?? bind.port)", "error": "\(error)"])
            }
        }
        socketUpBox.withLockedValue { $0 = false }
    }

    private func handle(_ envelope: AddressedEnvelope<ByteBuffer>) async {
        stats.received += 1
        guard let port = envelope.remoteAddress.port, let host = envelope.remoteAddress.ipAddress else { return }
        let from = MemberAddress(host: host, port: port)
        guard envelope.data.readableBytes <= settings.maxDatagramBytes else {
            drop(.truncated, from: from, detail: "\(envelope.data.readableBytes)+ bytes")
            return
        }
        guard let frame = open(Array(envelope.data.readableBytesView), from: from) else { return }
        guard !frame.message.isStream else {
            drop(.malformed, from: from, detail: "a state transfer sent as a datagram")
            return
        }
        // Replies go to where the datagram came from (the cache is bounded like `resolve`'s).
        if resolved[from] == nil && resolved.count >= 4096 { resolved.removeAll() }
        resolved[from] = envelope.remoteAddress
        await perform(node.receive(frame.message, from: from, now: now))
        publishViews()
    }

    private func send(_ message: GossipMessage, to address: MemberAddress) async {
        let sealed: [UInt8]
        do {
            sealed = try seal(message)
        } catch {
            stats.sendErrors += 1
            return
        }
        guard sealed.count <= settings.maxDatagramBytes else {
            // The state machine packs to the byte; this is a bug, not a network condition.
            stats.sendErrors += 1
            logger.error(
                "gossip datagram over the limit not sent", metadata: ["bytes": "\(sealed.count)", "limit": "\(settings.maxDatagramBytes)"])
            return
        }
        guard let udp else {
            stats.sendErrors += 1
            return
        }
        let socketAddress: SocketAddress
        do {
            socketAddress = try resolve(address)
        } catch {
            stats.sendErrors += 1
            logRateLimited(
                "resolve:\(address)", "cannot resolve a gossip address", level: .warning,
                metadata: ["to": "\(address)", "error": "\(error)"])
            return
        }
        switch udp.send(sealed, to: socketAddress) {
        case .sent:
            stats.sent += 1
        case .refused(let code):
            // A firewall's EPERM, a full buffer, an unreachable network: the datagram is lost, the socket stays.
            stats.sendErrors += 1
            logRateLimited(
                "send:\(address)", "gossip datagram not sent", level: .warning,
                metadata: ["to": "\(address)", "error": "\(GossipSocket.SocketError(call: "sendto", code: code))"])
        case .broken:
            stats.sendErrors += 1
            await checkSocket()
        }
    }

    private func resolve(_ address: MemberAddress) throws -> SocketAddress {
        if let known = resolved[address] { return known }
        let socketAddress = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
        if resolved.count >= 4096 { resolved.removeAll() }
        resolved[address] = socketAddress
        return socketAddress
    }

    // MARK: TCP

    private typealias StreamChannel = NIOAsyncChannel<ByteBuffer, ByteBuffer>
    private typealias Listener = NIOAsyncChannel<StreamChannel, Never>

    /// Accepted connections not yet served. A connection accepted as the listener closes (a
    /// shutdown, a rebind after a socket failure) is never handed over: NIO drops it, and its
    /// writer, never finished, traps the process. Kept here, its writer is finished when it closes.
    private final class UnservedStreams: Sendable {
        private let streams = NIOLockedValueBox<[ObjectIdentifier: NIOAsyncChannel<ByteBuffer, ByteBuffer>]>([:])

        func keep(_ stream: NIOAsyncChannel<ByteBuffer, ByteBuffer>) {
            streams.withLockedValue { $0[ObjectIdentifier(stream.channel)] = stream }
        }

        func take(_ channel: any Channel) -> NIOAsyncChannel<ByteBuffer, ByteBuffer>? {
            streams.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
        }
    }

    private let unserved = UnservedStreams()

    private func bindStream() async throws -> Listener {
        let maxFrame = settings.maxStreamBytes
        return try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.backlog, value: 128)
            .bind(host: bind.host, port: boundPort ?? bind.port) { [unserved] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrameBytes: maxFrame)))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LengthPrefixedFrameEncoder()))
                    let stream = try StreamChannel(wrappingChannelSynchronously: channel)
                    unserved.keep(stream)
                    channel.closeFuture.whenComplete { _ in unserved.take(channel)?.outbound.finish() }
                    return stream
                }
            }
    }

    /// Answers state exchanges and fetches, at most 64 at a time; each gets 5 s.
    private func streamServer(_ listener: Listener) async {
        do {
            try await listener.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    var active = 0
                    let finished = NIOLockedValueBox(0)
                    for try await connection in connections {
                        active =
                            active
                            - finished.withLockedValue { count in
                                defer { count = 0 }
                                return count
                            }
                        guard active < 64 else {
                            unserved.take(connection.channel)?.outbound.finish()
                            try? await connection.channel.close()
                            continue
                        }
                        active += 1
                        group.addTask {
                            await self.serve(connection)
                            finished.withLockedValue { $0 += 1 }
                        }
                    }
                }
            }
        } catch {
            if !Task.isCancelled && !left { logger.error("gossip TCP listener failed", metadata: ["error": "\(error)"]) }
        }
    }

    private func serve(_ connection: StreamChannel) async {
        _ = unserved.take(connection.channel)
        let peer = connection.channel.remoteAddress
        let from = MemberAddress(host: peer?.ipAddress ?? "?", port: peer?.port ?? 0)
        do {
            try await withDeadline(.seconds(5)) {
                try await connection.executeThenClose { inbound, outbound in
                    var iterator = inbound.makeAsyncIterator()
                    guard let request = try await iterator.next() else { return }
                    guard let reply = await self.answer(Array(request.readableBytesView), from: from) else { return }
                    try await outbound.write(ByteBuffer(bytes: reply))
                }
            }
        } catch {
            stats.streamFailures += 1
            logger.debug("gossip TCP request failed", metadata: ["from": "\(from)", "error": "\(error)"])
        }
    }

    private func answer(_ bytes: [UInt8], from: MemberAddress) async -> [UInt8]? {
        stats.received += 1
        guard let frame = open(bytes, from: from) else { return nil }
        guard frame.message.isStream else {
            drop(.malformed, from: from, detail: "a datagram message sent over TCP")
            return nil
        }
        let (reply, directives) = node.answer(frame.message, now: now)
        await perform(directives)
        publishViews()
        guard let reply, let sealed = try? seal(reply) else { return nil }
        stats.streamsServed += 1
        return sealed
    }

    /// Runs the state machine's TCP requests, at most 32 at a time (more are dropped and counted:
    /// the state machine asks again on its next timer).
    private func exchangeLoop(_ jobs: AsyncStream<(GossipMessage, MemberAddress)>) async {
        await withDiscardingTaskGroup { group in
            for await (message, address) in jobs {
                guard activeExchanges < 32 else {
                    stats.streamFailures += 1
                    continue
                }
                activeExchanges += 1
                group.addTask {
                    await self.exchange(message, with: address)
                    await self.exchangeFinished()
                }
            }
        }
    }

    private var activeExchanges = 0
    private func exchangeFinished() { activeExchanges -= 1 }

    /// One TCP request and its answer, fed back to the state machine.
    private func exchange(_ message: GossipMessage, with address: MemberAddress) async {
        guard !left, let request = try? seal(message) else { return }
        stats.streamsOpened += 1
        let maxFrame = settings.maxStreamBytes
        // From the gossip address when it is a specific one, so a peer (and a firewall) sees one address per node.
        let local = ["0.0.0.0", "::"].contains(bind.host) ? nil : try? SocketAddress(ipAddress: bind.host, port: 0)
        do {
            let replyBytes: [UInt8]? = try await withDeadline(.seconds(5)) {
                var bootstrap = ClientBootstrap(group: self.group).connectTimeout(.seconds(2))
                if let local { bootstrap = bootstrap.bind(to: local) }
                let channel =
                    try await bootstrap
                    .connect(host: address.host, port: address.port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                ByteToMessageHandler(LengthPrefixedFrameDecoder(maxFrameBytes: maxFrame)))
                            try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(LengthPrefixedFrameEncoder()))
                            return try StreamChannel(wrappingChannelSynchronously: channel)
                        }
                    }
                return try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(ByteBuffer(bytes: request))
                    var iterator = inbound.makeAsyncIterator()
                    return try await iterator.next().map { Array($0.readableBytesView) }
                }
            }
            guard let replyBytes, let frame = open(replyBytes, from: address) else {
                stats.streamFailures += 1
                if !node.joined, case .sync = message {
                    logRateLimited(
                        "join:\(address)", "cannot join through a seed: it closed the connection without an answer", level: .warning,
                        metadata: [
                            "seed": "\(address)",
                            "hint": "it probably holds a different cluster key; compare `signalbox cluster keyring status`",
                        ])
                }
                return
            }
            await perform(node.receive(frame.message, from: address, now: now))
            publishViews()
        } catch {
            stats.streamFailures += 1
            logger.debug("gossip TCP exchange failed", metadata: ["with": "\(address)", "error": "\(error)"])
            if !node.joined, case .sync = message {
                logRateLimited(
                    "join:\(address)", "cannot join through a seed", level: .warning,
                    metadata: [
                        "seed": "\(address)", "error": "\(error)",
                        "hint": "a seed that closes the connection without answering holds a different cluster key",
                    ])
            }
        }
    }

    // MARK: Frames

    private func seal(_ message: GossipMessage) throws -> [UInt8] {
        frameSequence += 1
        let frame = GossipFrame(
            sender: node.myself.id, epoch: epoch, sequence: frameSequence,
            sentAtMillis: UInt64(Date().timeIntervalSince1970 * 1000), message: message)
        return try keyring.seal(WireCodec.encode(frame))
    }

    /// Opens, decodes and replay-checks a frame; counts and drops anything that fails.
    private func open(_ bytes: [UInt8], from: MemberAddress) -> GossipFrame? {
        guard let plaintext = keyring.open(bytes) else {
            let keyID = ClusterKeyring.keyID(ofSealed: bytes) ?? "none"
            drop(
                .forged, from: from,
                detail: "sealed with key \(keyID), which this node does not hold (accepting \(keyring.keyIDStrings.joined(separator: ",")))"
            )
            return nil
        }
        let frame: GossipFrame
        do {
            frame = try WireCodec.decode(plaintext)
        } catch {
            drop(.malformed, from: from, detail: "\(error)")
            return nil
        }
        let verdict = replayGuard.check(
            sender: frame.sender, epoch: frame.epoch, sequence: frame.sequence,
            sentAtMillis: frame.sentAtMillis, receivedAtMillis: UInt64(Date().timeIntervalSince1970 * 1000))
        switch verdict {
        case .accept:
            if let keyID = ClusterKeyring.keyID(ofSealed: bytes) {
                if peerKeys[frame.sender] == nil && peerKeys.count >= 4096 { peerKeys.removeAll() }
                peerKeys[frame.sender] = keyID
            }
            return frame
        case .replayed:
            drop(.replayed, from: from, detail: "frame \(frame.sequence) of \(frame.sender) seen before")
        case .stale:
            drop(.stale, from: from, detail: "frame of \(frame.sender) older than the replay window")
        }
        return nil
    }

    private func drop(_ reason: DropReason, from: MemberAddress, detail: String) {
        stats.dropped += 1
        stats.droppedByReason[reason, default: 0] += 1
        let sender = from.description
        if stats.droppedBySender[sender] != nil || stats.droppedBySender.count < 256 {
            stats.droppedBySender[sender, default: 0] += 1
        } else {
            stats.droppedBySender["other", default: 0] += 1
        }
        logRateLimited(
            "drop:\(reason):\(sender)", "gossip frame dropped", level: reason == .forged ? .warning : .notice,
            metadata: ["reason": "\(reason.rawValue)", "from": "\(sender)", "detail": "\(detail)"])
    }

    /// Logs at most once per 10 s per topic (60 s for clock skew) (a flood of bad datagrams must not flood the log).
    private func logRateLimited(_ topic: String, _ message: Logger.Message, level: Logger.Level, metadata: Logger.Metadata) {
        let current = clock.now
        if let last = lastLogged[topic], current - last < .seconds(10) { return }
        if lastLogged.count >= 1024 { lastLogged = lastLogged.filter { current - $0.value < .seconds(10) } }
        lastLogged[topic] = current
        logger.log(level: level, message, metadata: metadata)
    }

    // MARK: Directives

    private func perform(_ directives: [SwimDirective]) async {
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                await send(message, to: to)
            case .exchange(let message, let with):
                exchanges?.yield((message, with))
            case .memberChanged(let member):
                if member.id != node.myself.id || member.status != .alive {
                    logger.info(
                        "member \(member.status.rawValue)",
                        metadata: [
                            "member": "\(member.id)", "address": "\(member.address)", "incarnation": "\(member.incarnation)",
                        ])
                }
                onMemberChange(member)
            case .stateChanged(let entry, let age):
                onStateChange(entry, age)
            case .stateRemoved(let key):
                onStateRemoved(key)
            case .conflict(let existing, let claimant):
                logRateLimited(
                    "conflict:\(existing.id)", "two processes claim one node id; the second is refused", level: .error,
                    metadata: [
                        "node": "\(existing.id)", "known_at": "\(existing.address)", "claimed_from": "\(claimant.address)",
                    ])
            }
        }
    }
}

/// Runs `body`, cancelling it after `timeout`.
func withDeadline<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw DeadlineExceeded() }
        return value
    }
}

struct DeadlineExceeded: Error, CustomStringConvertible {
    var description: String { "timed out" }
}

/// Asks a running agent to re-read its cluster key file now rather than at its next 10 s tick
/// (`signalbox serve` sends it on SIGHUP, which systemd's `ExecReload` sends).
public final class KeyringReloadRequests: Sendable {
    let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public func request() { continuation.yield() }
}
