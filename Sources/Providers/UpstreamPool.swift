/// Where an upstream connection goes: scheme, host and port.
public struct UpstreamOrigin: Hashable, Sendable, CustomStringConvertible {
    public var tls: Bool
    public var host: String
    public var port: Int

    public init(tls: Bool, host: String, port: Int) {
        self.tls = tls
        self.host = host
        self.port = port
    }

    public var description: String { "\(tls ? "https" : "http")://\(host):\(port)" }
}

/// The limits of an upstream connection pool. Open connections are limited separately from
/// idle ones: a slow provider may hold thousands of streams open at once, but only a few
/// connections are worth keeping warm between bursts.
public struct UpstreamPoolLimits: Sendable, Hashable {
    /// Connections in use or idle to one origin; a request beyond it fails without reaching the
    /// upstream (so failover tries another endpoint).
    public var maxConnectionsPerOrigin: Int
    /// Idle connections kept per origin; more are closed as they come back.
    public var maxIdlePerOrigin: Int
    /// An idle connection unused this long is closed.
    public var idleTimeout: Duration

    public init(maxConnectionsPerOrigin: Int = 16_384, maxIdlePerOrigin: Int = 256, idleTimeout: Duration = .seconds(60)) {
        self.maxConnectionsPerOrigin = maxConnectionsPerOrigin
        self.maxIdlePerOrigin = maxIdlePerOrigin
        self.idleTimeout = idleTimeout
    }
}

/// The bookkeeping of a keep-alive connection pool, without I/O: which connections are idle (and
/// since when) and how many each origin has open. The transport asks it what to do and carries
/// out the answer, so the rules are tested without sockets.
///
/// `Connection` is whatever identifies a connection to the shell (a channel; an integer in tests).
public struct UpstreamPoolState<Connection: Hashable & Sendable>: Sendable {
    public enum Lease: Equatable, Sendable {
        /// Use this idle connection.
        case reuse(Connection)
        /// Open a new connection; it counts against the origin from now on.
        case connect
        /// The origin is at its connection limit.
        case refuse
    }

    private struct Idle: Sendable {
        var connection: Connection
        var since: ContinuousClock.Instant
    }

    private struct Origin: Sendable {
        /// Newest last: the most recently used connection is reused first (its TCP window is warm
        /// and it is the least likely to have been closed by the server).
        var idle: [Idle] = []
        /// Connections counted against the limit: in use, being opened, or idle.
        var open = 0
    }

    public let limits: UpstreamPoolLimits
    private var origins: [UpstreamOrigin: Origin] = [:]

    public init(limits: UpstreamPoolLimits) { self.limits = limits }

    /// A connection for one request to `origin`.
    public mutating func lease(_ origin: UpstreamOrigin) -> Lease {
        var entry = origins[origin, default: Origin()]
        defer { origins[origin] = entry }
        if let idle = entry.idle.popLast() { return .reuse(idle.connection) }
        guard entry.open < limits.maxConnectionsPerOrigin else { return .refuse }
        entry.open += 1
        return .connect
    }

    /// A connection opened for `.connect` could not be made.
    public mutating func connectFailed(_ origin: UpstreamOrigin) {
        guard var entry = origins[origin] else { return }
        assert(entry.open > 0, "a connection un-counted twice")
        entry.open = max(0, entry.open - 1)
        store(entry, for: origin)
    }

    /// A request finished and left its connection reusable. Returns true when the connection
    /// should be closed instead (the origin has enough idle ones). Every connection that was
    /// counted is reported once with `closed` when its channel goes away, whoever closed it.
    public mutating func release(_ connection: Connection, to origin: UpstreamOrigin, now: ContinuousClock.Instant) -> Bool {
        guard var entry = origins[origin], entry.idle.count < limits.maxIdlePerOrigin else { return true }
        entry.idle.append(Idle(connection: connection, since: now))
        origins[origin] = entry
        return false
    }

    /// A connection closed (by either side), in use or idle: it no longer counts.
    public mutating func closed(_ connection: Connection, of origin: UpstreamOrigin) {
        guard var entry = origins[origin] else { return }
        if let index = entry.idle.firstIndex(where: { $0.connection == connection }) { entry.idle.remove(at: index) }
        assert(entry.open > 0, "a connection un-counted twice")
        entry.open = max(0, entry.open - 1)
        store(entry, for: origin)
    }

    /// Takes the connections idle for longer than the idle timeout out of the pool; the shell
    /// closes them (and reports each with `closed`).
    public mutating func expire(now: ContinuousClock.Instant) -> [Connection] {
        var expired: [Connection] = []
        for (origin, var entry) in origins {
            let stale = entry.idle.prefix { now - $0.since >= limits.idleTimeout }
            guard !stale.isEmpty else { continue }
            expired += stale.map(\.connection)
            entry.idle.removeFirst(stale.count)
            origins[origin] = entry
        }
        return expired
    }

    /// Every idle connection, taken out of the pool (for shutdown).
    public mutating func drainIdle() -> [Connection] {
        var all: [Connection] = []
        for (origin, var entry) in origins {
            all += entry.idle.map(\.connection)
            entry.idle.removeAll()
            origins[origin] = entry
        }
        return all
    }

    /// How many connections `origin` has open, and how many of them are idle.
    public func counts(_ origin: UpstreamOrigin) -> (open: Int, idle: Int) {
        (origins[origin]?.open ?? 0, origins[origin]?.idle.count ?? 0)
    }

    /// Forgets an origin with nothing open, so the table stays as small as the set of live origins.
    private mutating func store(_ entry: Origin, for origin: UpstreamOrigin) {
        origins[origin] = entry.open == 0 && entry.idle.isEmpty ? nil : entry
    }
}
