import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes

/// Limits on the connections a client can hold, authenticated or not.
public struct ConnectionLimits: Sendable {
    /// A new connection must deliver its first request head within this long.
    public var headerTimeout: Duration = .seconds(30)
    /// A request body must arrive whole within this long of its head.
    public var bodyTimeout: Duration = .seconds(60)
    /// A kept-alive connection must start its next request head within this long of the last
    /// response ending. Not running while a request is read or answered (streams are long).
    public var idleTimeout: Duration = .seconds(30)
    /// Open connections one source address may hold (an IPv6 address counts with its /64).
    public var perAddress = 64
    /// Addresses not held to `perAddress` (still counted in `total`): the load balancers and
    /// proxies every client's connection comes through.
    public var exemptAddresses: [AddressRange] = []
    /// Open client connections in all; nil: half of what the descriptor limit leaves after a
    /// reserve, since each client connection in flight may need an upstream one too.
    public var total: Int?

    public init() {}

    /// Descriptors kept back for the ledger pool, gossip, files and listeners.
    public static let descriptorReserve = 128

    /// `total`, or what the process's descriptor limit allows.
    public var effectiveTotal: Int {
        if let total { return total }
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < 1 << 30 else { return 10_000 }
        return max(16, (Int(limit.rlim_cur) - Self.descriptorReserve) / 2)
    }
}

/// Counts open connections per source address and in all; a connection over either limit is
/// accepted and closed at once (never left in the listen backlog, where it would hold the
/// queue for everyone). Pure bookkeeping behind a lock; `GuardedChildChannel` applies it.
public final class ConnectionLimiter: Sendable {
    struct State {
        var perAddress: [String: Int] = [:]
        var total = 0
        var refused = 0

        mutating func admit(_ address: String, perAddressLimit: Int, totalLimit: Int) -> Bool {
            guard total < totalLimit, perAddress[address, default: 0] < perAddressLimit else {
                refused += 1
                return false
            }
            total += 1
            perAddress[address, default: 0] += 1
            return true
        }

        mutating func release(_ address: String) {
            total -= 1
            let left = perAddress[address, default: 1] - 1
            perAddress[address] = left > 0 ? left : nil
        }
    }

    let perAddressLimit: Int
    let totalLimit: Int
    let exempt: [AddressRange]
    private let state = NIOLockedValueBox(State())

    public init(perAddress: Int, total: Int, exempt: [AddressRange] = []) {
        perAddressLimit = perAddress
        totalLimit = total
        self.exempt = exempt
    }

    /// Takes a place for a connection from `address` (as `group(of:)` names it); false when it
    /// must be closed.
    public func admit(_ address: String) -> Bool {
        let perAddress = exempt.contains { $0.contains(address) } ? Int.max : perAddressLimit
        return state.withLockedValue { $0.admit(address, perAddressLimit: perAddress, totalLimit: totalLimit) }
    }

    /// What connections are counted by: the IPv4 address, or an IPv6 address's /64 (one host
    /// commonly holds the whole /64, so counting single addresses would not limit it).
    public static func group(of address: SocketAddress?) -> String {
        guard let address, let ip = address.ipAddress else { return "unknown" }
        guard case .v6 = address, let bytes = AddressRange.bytes(ip), bytes.count == 16 else { return ip }
        if bytes[0..<12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF] { return bytes[12...].map(String.init).joined(separator: ".") }
        return stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
            .joined(separator: ":") + "::/64"
    }

    public func release(_ address: String) { state.withLockedValue { $0.release(address) } }

    /// Connections open now, and connections closed at once for a limit since start.
    public var counts: (open: Int, refused: Int) { state.withLockedValue { ($0.total, $0.refused) } }
}

/// A server child channel whose connections are counted by a `ConnectionLimiter` and held to
/// `RequestDeadlines`; everything else is HTTP/1's (inside TLS when served so).
///
/// It also keeps each connection's async channel until the server hands it to `handle`. A
/// connection accepted while the server stops is never handed over: NIO then drops the async
/// channel, and its writer, never finished, traps (`Deinited NIOAsyncWriter without calling
/// finish()`). Kept here, it is finished when such a connection closes (its header deadline
/// closes it) instead.
public struct GuardedChildChannel: ServerChildChannel {
    public typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel
    let limiter: ConnectionLimiter
    let unhandled = UnhandledChannels()

    public init(_ base: HTTP1Channel, limiter: ConnectionLimiter) {
        self.base = base
        self.limiter = limiter
    }

    struct OverLimit: Error {}

    /// Async channels set up and not yet handed to `handle`, by connection.
    final class UnhandledChannels: Sendable {
        private let values = NIOLockedValueBox<[ObjectIdentifier: Value]>([:])

        func keep(_ value: Value) { values.withLockedValue { $0[ObjectIdentifier(value.channel)] = value } }

        func take(_ channel: any Channel) -> Value? { values.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) } }
    }

    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let address = ConnectionLimiter.group(of: channel.remoteAddress)
        guard limiter.admit(address) else {
            // Closed before a byte is read; the failed set-up drops the connection quietly.
            logger.debug("connection over the limit closed", metadata: ["address": "\(address)"])
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(OverLimit())
        }
        let unhandled = self.unhandled
        channel.closeFuture.whenComplete { [limiter] _ in
            limiter.release(address)
            // Never handed over: finish its writer, which nobody else will.
            unhandled.take(channel)?.outbound.finish()
        }
        let value = base.setup(channel: channel, logger: logger)
        value.whenSuccess { unhandled.keep($0) }
        // NIO drops a child whose set-up failed without closing it: close it, so its place frees.
        value.whenFailure { _ in channel.close(promise: nil) }
        return value
    }

    public func handle(value: Value, logger: Logger) async {
        _ = unhandled.take(value.channel)
        await base.handle(value: value, logger: logger)
    }
}

/// When a connection must have made progress: a pure state machine over the request parts read
/// and the response parts written, so its rules are tested without a socket.
public struct RequestDeadlines: Sendable {
    public enum Phase: Equatable, Sendable {
        /// Waiting for the first request head since the connection opened.
        case awaitingFirstHead
        /// A request's body is being read.
        case readingBody
        /// Every request read; an answer is still being written (no deadline: streams are long).
        case answering
        /// Every answer written; waiting for the next request head.
        case idle
    }

    let limits: ConnectionLimits
    /// A request head was read and its end not yet.
    private var reading = false
    /// Requests whose head was read and whose response has not ended (pipelining allows several).
    private var unanswered = 0
    private var servedAny = false

    public init(limits: ConnectionLimits) { self.limits = limits }

    public var phase: Phase {
        // A pipelined request read while an earlier one is answered waits on that answer (the
        // client reads it first): its body is not held to the body deadline meanwhile.
        if reading { return unanswered > 1 ? .answering : .readingBody }
        if unanswered > 0 { return .answering }
        return servedAny ? .idle : .awaitingFirstHead
    }

    /// How long from now the connection may stay in its phase, nil for no limit.
    public var allowance: Duration? {
        switch phase {
        case .awaitingFirstHead: limits.headerTimeout
        case .readingBody: limits.bodyTimeout
        case .answering: nil
        case .idle: limits.idleTimeout
        }
    }

    public mutating func readHead() {
        unanswered += 1
        reading = true
        servedAny = true
    }

    public mutating func readEnd() { reading = false }

    /// A response ended: possibly before its request's body was read (an early 402 or 413), in
    /// which case the body deadline still runs until the body's end arrives.
    public mutating func wroteEnd() { unanswered = max(0, unanswered - 1) }
}

/// Closes a connection that does not deliver a request head, or a body, in time, or sits idle
/// between requests too long (`RequestDeadlines`). It sits after HTTP decoding.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var deadlines: RequestDeadlines
    private var timer: Scheduled<Void>?
    /// Bumped at every phase change, so a timer of an earlier phase does nothing.
    private var generation = 0
    /// The handler's place in the pipeline while it is in one. The timer reaches it through a
    /// weak reference: a pending timer must not keep a closed connection's pipeline alive.
    private var context: ChannelHandlerContext?

    /// What a timer holds: the handler, weakly; touched on its event loop only.
    private final class WeakHandler: @unchecked Sendable {
        weak var handler: RequestDeadlineHandler?
        init(_ handler: RequestDeadlineHandler) { self.handler = handler }
    }

    init(limits: ConnectionLimits) { deadlines = RequestDeadlines(limits: limits) }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            deadlines.readHead()
            arm(context)
        case .end:
            deadlines.readEnd()
            arm(context)
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            deadlines.wroteEnd()
            arm(context)
        }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        generation += 1
        guard let allowance = deadlines.allowance, context.channel.isActive else { return }
        let armed = generation
        let reference = WeakHandler(self)
        timer = context.eventLoop.scheduleTask(in: TimeAmount(allowance)) {
            guard let handler = reference.handler, handler.generation == armed, let context = handler.context else { return }
            context.close(promise: nil)
        }
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`) or one address.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    let network: [UInt8]
    let prefixLength: Int
    public let description: String

    /// Nil when `text` is not an address or `address/prefix`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let bytes = Self.bytes(parts[0]) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
        guard let length, (0...(bytes.count * 8)).contains(length) else { return nil }
        network = bytes
        prefixLength = length
        description = text
    }

    /// Whether the address `text` (or an IPv6 /64 group as `ConnectionLimiter.group` writes it)
    /// is in the range.
    public func contains(_ text: String) -> Bool {
        let address = text.hasSuffix("::/64") ? String(text.dropLast(3)) : text
        guard let bytes = Self.bytes(address), bytes.count == network.count else { return false }
        var left = prefixLength
        for (a, b) in zip(bytes, network) where left > 0 {
            let bits = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if a & mask != b & mask { return false }
            left -= bits
        }
        return true
    }

    /// The address's bytes: 4 for IPv4, 16 for IPv6.
    static func bytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}
