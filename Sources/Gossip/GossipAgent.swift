import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The I/O shell around `SwimNode`: one UDP socket, AES-GCM sealed JSON datagrams, a timer.
///
/// It feeds received datagrams and clock ticks to the state machine and carries out its
/// directives (send, report a member or state change). Run it as a swift-service-lifecycle
/// service: on graceful shutdown it announces that it leaves, so no peer suspects it.
public actor GossipAgent: Service {
    /// Counters for `/metrics` and the admin API.
    public struct Stats: Sendable, Hashable {
        public var received = 0
        public var sent = 0
        /// Datagrams that no cluster key opened, or that did not decode.
        public var dropped = 0
    }

    private var node: SwimNode
    private let seeds: [MemberAddress]
    private let bind: MemberAddress
    private var keyring: ClusterKeyring
    private let keyringPath: String?
    private let logger: Logger
    private let onMemberChange: @Sendable (Member) -> Void
    private let onStateChange: @Sendable (StateEntry) -> Void
    private let clock = ContinuousClock()
    private let started: ContinuousClock.Instant
    private var outbound: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>?
    private var resolved: [MemberAddress: SocketAddress] = [:]
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()
    public private(set) var stats = Stats()
    private let boundPortBox = NIOLockedValueBox<Int?>(nil)
    private let joinedBox = NIOLockedValueBox(false)

    /// - Parameters:
    ///   - myself: this node; its incarnation should be its boot time in milliseconds.
    ///   - bind: where to listen (`--gossip-bind`); `myself.address` is what peers are told.
    ///   - keyringPath: re-read every 10 s, so a rotated key file takes effect without a restart.
    public init(myself: Member, bind: MemberAddress, seeds: [MemberAddress], keyring: ClusterKeyring, keyringPath: String? = nil,
                settings: SwimSettings = SwimSettings(), logger: Logger,
                onMemberChange: @escaping @Sendable (Member) -> Void = { _ in },
                onStateChange: @escaping @Sendable (StateEntry) -> Void = { _ in }) {
        node = SwimNode(myself: myself, settings: settings, seed: UInt64.random(in: 0...UInt64.max))
        self.bind = bind
        self.seeds = seeds
        self.keyring = keyring
        self.keyringPath = keyringPath
        self.logger = logger
        self.onMemberChange = onMemberChange
        self.onStateChange = onStateChange
        started = clock.now
        encoder.outputFormatting = []
    }

    // MARK: Views (safe from any thread)

    /// The UDP port actually bound (useful with port 0), once running.
    public nonisolated var boundPort: Int? { boundPortBox.withLockedValue { $0 } }
    /// True once a seed answered (or there were none).
    public nonisolated var isJoined: Bool { joinedBox.withLockedValue { $0 } }

    public var members: [Member] { node.allMembers }
    public var myself: Member { node.myself }
    public var stateEntries: [StateEntry] { node.state.values.sorted { $0.key < $1.key } }
    public var awareness: Int { node.awareness }

    /// Sets a replicated state entry (health, a routing table, a counter) and gossips it.
    public func publish(key: String, value: String, urgent: Bool = false) async {
        let millis = UInt64(Date().timeIntervalSince1970 * 1000)
        await perform(node.publish(key: key, value: value, wallClockMillis: millis, urgent: urgent))
    }

    /// Loads state saved by an earlier run (see `SwimNode.restore`).
    public func restore(_ entries: [StateEntry]) async {
        await perform(node.restore(entries))
    }

    // MARK: Running

    public func run() async throws {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .bind(host: bind.host, port: bind.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
                }
            }
        boundPortBox.withLockedValue { $0 = channel.channel.localAddress?.port }
        logger.info("gossip listening", metadata: ["address": "\(bind.host):\(boundPort ?? bind.port)", "node": "\(node.myself.id)"])
        try await channel.executeThenClose { inbound, outbound in
            self.setOutbound(outbound)
            await self.perform(self.node.join(seeds: self.seeds, now: self.now))
            self.joinedBox.withLockedValue { $0 = self.node.joined }
            // On graceful shutdown: leave (so nobody suspects us), then stop; on cancellation: stop.
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        do {
                            for try await envelope in inbound { await self.handle(envelope) }
                        } catch {}
                    }
                    group.addTask { await self.tickLoop() }
                    group.addTask { await self.keyringLoop() }
                    await self.waitUntilLeft()
                    group.cancelAll()
                }
            } onGracefulShutdown: {
                Task { await self.leave() }
            }
        }
    }

    private var left = false
    private var leaveWaiters: [CheckedContinuation<Void, Never>] = []

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

    private func setOutbound(_ writer: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>) { outbound = writer }

    private var now: Duration { clock.now - started }

    private func tickLoop() async {
        while !Task.isCancelled && !left {
            try? await Task.sleep(for: .milliseconds(20))
            await perform(node.tick(now: now))
            joinedBox.withLockedValue { $0 = node.joined }
        }
    }

    private func keyringLoop() async {
        guard let keyringPath else { return }
        while !Task.isCancelled && !left {
            try? await Task.sleep(for: .seconds(10))
            do {
                keyring = try ClusterKeyring(contentsOfFile: keyringPath)
            } catch {
                logger.error("cannot reload the cluster key file; keeping the current keys", metadata: ["error": "\(error)"])
            }
        }
    }

    private func handle(_ envelope: AddressedEnvelope<ByteBuffer>) async {
        stats.received += 1
        let bytes = Array(envelope.data.readableBytesView)
        guard let plaintext = keyring.open(bytes), let message = try? decoder.decode(GossipMessage.self, from: Data(plaintext)) else {
            stats.dropped += 1
            return
        }
        guard let port = envelope.remoteAddress.port, let host = envelope.remoteAddress.ipAddress else { return }
        // Replies go to where the datagram came from.
        let from = MemberAddress(host: host, port: port)
        resolved[from] = envelope.remoteAddress
        await perform(node.receive(message, from: from, now: now))
        joinedBox.withLockedValue { $0 = node.joined }
    }

    private func perform(_ directives: [SwimDirective]) async {
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                await send(message, to: to)
            case .memberChanged(let member):
                if member.id != node.myself.id || member.status != .alive {
                    logger.info("member \(member.status.rawValue)", metadata: [
                        "member": "\(member.id)", "address": "\(member.address)", "incarnation": "\(member.incarnation)",
                    ])
                }
                onMemberChange(member)
            case .stateChanged(let entry):
                onStateChange(entry)
            }
        }
    }

    private func send(_ message: GossipMessage, to address: MemberAddress) async {
        guard let outbound else { return }
        do {
            let socketAddress: SocketAddress
            if let known = resolved[address] {
                socketAddress = known
            } else {
                socketAddress = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
                resolved[address] = socketAddress
            }
            let sealed = try keyring.seal(Array(encoder.encode(message)))
            try await outbound.write(AddressedEnvelope(remoteAddress: socketAddress, data: ByteBuffer(bytes: sealed)))
            stats.sent += 1
        } catch {
            logger.debug("gossip send failed", metadata: ["to": "\(address)", "error": "\(error)"])
        }
    }
}
