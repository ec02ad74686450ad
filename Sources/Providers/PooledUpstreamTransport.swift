import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// `UpstreamTransport` on SwiftNIO: HTTP/1.1 over pooled keep-alive connections (TLS through
/// swift-nio-ssl), the response body streamed with backpressure and handed over per socket read.
///
/// The pool limits open connections and idle connections per origin separately (see
/// `UpstreamPoolLimits`), so thousands of slow streams to one provider each get a connection
/// while only a few stay warm between bursts. Connections are made on the caller's preferred
/// event loop when it names one.
public final class PooledUpstreamTransport: UpstreamTransport {
    private let group: any EventLoopGroup
    private let connectTimeout: TimeAmount
    private let tls: NIOSSLContext
    private let pool: NIOLockedValueBox<Pool>
    private let expiry: NIOLockedValueBox<RepeatedTask?>

    private struct Pool {
        var state: UpstreamPoolState<UpstreamConnection>
        var shutDown = false
    }

    /// A transport on `group` (the process-wide event loops unless told otherwise). `trustRoots`
    /// replaces the system's CAs (the peers' CA, when forwarding to other nodes over HTTPS).
    public init(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, connectTimeout: Duration,
        limits: UpstreamPoolLimits = UpstreamPoolLimits(), trustRoots: [NIOSSLCertificate]? = nil
    ) throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let trustRoots { configuration.trustRoots = .certificates(trustRoots) }
        configuration.applicationProtocols = ["http/1.1"]
        self.group = group
        self.connectTimeout = TimeAmount(connectTimeout)
        self.tls = try NIOSSLContext(configuration: configuration)
        self.pool = NIOLockedValueBox(Pool(state: UpstreamPoolState(limits: limits)))
        self.expiry = NIOLockedValueBox(nil)
        let interval = TimeAmount(max(limits.idleTimeout / 2, .milliseconds(100)))
        let task = group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
            self?.closeExpired()
        }
        expiry.withLockedValue { $0 = task }
    }

    deinit { expiry.withLockedValue { $0?.cancel() } }

    /// Closes idle connections and refuses new requests; requests in flight finish.
    public func shutdown() async {
        expiry.withLockedValue { $0?.cancel() }
        let idle = pool.withLockedValue { pool in
            pool.shutDown = true
            return pool.state.drainIdle()
        }
        for connection in idle { try? await connection.channel.close() }
    }

    /// How many connections `origin` has open and idle (for tests and metrics).
    public func connectionCounts(_ origin: UpstreamOrigin) -> (open: Int, idle: Int) {
        pool.withLockedValue { $0.state.counts(origin) }
    }

    public func send(_ request: UpstreamRequest) async throws -> UpstreamResponse {
        let target = try UpstreamTarget(request.url)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: target.path)
        head.headers.reserveCapacity(request.headers.count + 2)
        head.headers.add(name: "host", value: target.hostHeader)
        for (name, value) in request.headers where !Self.ownedHeaders.contains(name.lowercased()) {
            head.headers.add(name: name, value: value)
        }
        head.headers.add(name: "content-length", value: String(request.body.readableBytes))

        let abort = request.abort
        let start = try await exchange(head, body: request.body, origin: target.origin, abort: abort)
        let body = start.body
        let connection = start.connection
        abort?.onAbort { connection.abort(exchange: start.exchange) }
        let iterated = NIOLockedValueBox(false)
        return UpstreamResponse(
            status: Int(start.head.status.code),
            headers: start.head.headers.map { ($0.name, $0.value) },
            body: UpstreamBody(
                makeNext: {
                    // The body streams once: a second reader gets an error, not NIO's trap.
                    guard
                        iterated.withLockedValue({ iterated in
                            defer { iterated = true }
                            return !iterated
                        })
                    else {
                        return { throw UpstreamFailure(.malformed, "The response body was already read") }
                    }
                    let iterator = ProducerIteratorBox(body.makeAsyncIterator())
                    return { try await iterator.next() }
                },
                finishQuietly: { connection.finishQuietly(exchange: start.exchange) }))
    }

    /// Headers the transport writes itself, and hop-by-hop headers that belong to one
    /// connection: a caller's (or a forwarded client's) are dropped.
    static let ownedHeaders: Set<String> = [
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
        "proxy-authenticate", "te", "trailer", "upgrade", "expect",
    ]

    /// Sends the request on a pooled connection. A reused connection found closed before the
    /// request left (the server dropped it while idle) is replaced once by a new one.
    private func exchange(
        _ head: HTTPRequestHead, body: ByteBuffer, origin: UpstreamOrigin, abort: UpstreamAbort?
    ) async throws -> UpstreamResponseStart {
        var attempts = 0
        while true {
            attempts += 1
            var reused = false
            do {
                if abort?.isAborted == true { throw UpstreamFailure(.disconnected, "The call was stopped", neverReachedUpstream: true) }
                let (connection, wasReused) = try await lease(origin, abort: abort)
                reused = wasReused
                let promise = connection.channel.eventLoop.makePromise(of: UpstreamResponseStart.self)
                let start = try await withTaskCancellationHandler {
                    connection.start(head, body: body, promise: promise)
                    // After `start`: each reaches the connection's event loop after it. (A task
                    // cancelled before this ran its handler first, when there was nothing to cancel.)
                    abort?.onAbort { connection.cancel(promise) }
                    if Task.isCancelled { connection.cancel(promise) }
                    return try await promise.futureResult.get()
                } onCancel: {
                    connection.cancel(promise)
                }
                try Task.checkCancellation()
                return start
            } catch let failure as UpstreamFailure where !Task.isCancelled {
                if reused && failure.neverReachedUpstream && attempts < 2 { continue }
                throw failure
            } catch {
                throw Task.isCancelled ? CancellationError() : error
            }
        }
    }

    // MARK: The pool

    private func lease(_ origin: UpstreamOrigin, abort: UpstreamAbort?) async throws -> (UpstreamConnection, reused: Bool) {
        let decision = pool.withLockedValue { pool -> UpstreamPoolState<UpstreamConnection>.Lease? in
            pool.shutDown ? nil : pool.state.lease(origin)
        }
        switch decision {
        case nil:
            throw UpstreamFailure(.connect, "The router is shutting down", neverReachedUpstream: true)
        case .reuse(let connection):
            return (connection, true)
        case .refuse:
            throw UpstreamFailure(
                .connect, "Too many open connections to the provider (\(origin))", neverReachedUpstream: true)
        case .connect:
            let (connection, ready): (UpstreamConnection, EventLoopFuture<Void>)
            do {
                (connection, ready) = try await connect(origin)
            } catch {
                pool.withLockedValue { $0.state.connectFailed(origin) }
                throw Self.connectFailure(error)
            }
            // From here the connection reports its own closing to the pool.
            abort?.onAbort { connection.abortConnecting() }
            do {
                try await withTaskCancellationHandler {
                    try await ready.get()
                } onCancel: {
                    connection.channel.close(promise: nil)
                }
            } catch {
                connection.channel.close(promise: nil)
                throw Self.connectFailure(error)
            }
            return (connection, false)
        }
    }

    /// A new connection, and a future that completes when it can take a request.
    private func connect(_ origin: UpstreamOrigin) async throws -> (UpstreamConnection, EventLoopFuture<Void>) {
        let tls = origin.tls ? self.tls : nil
        let handshakeTimeout = connectTimeout
        let serverName = origin.host.isIPAddress ? nil : origin.host
        let channel = try await ClientBootstrap(group: group)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: serverName)) }
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(UpstreamExchangeHandler(handshakeTimeout: tls == nil ? nil : handshakeTimeout))
                }
            }
            .connect(host: origin.host, port: origin.port)
            .get()
        return try await channel.eventLoop.submit { [weak self] in
            let handler = try channel.pipeline.syncOperations.handler(type: UpstreamExchangeHandler.self)
            let connection = UpstreamConnection(origin: origin, channel: channel, handler: handler)
            let ready = handler.attach(
                .init(
                    reusable: { [weak self] in self?.release(connection) },
                    closed: { [weak self] in self?.pool.withLockedValue { $0.state.closed(connection, of: origin) } }))
            return (connection, ready)
        }.get()
    }

    private func release(_ connection: UpstreamConnection) {
        let close = pool.withLockedValue { pool in
            pool.shutDown || pool.state.release(connection, to: connection.origin, now: .now)
        }
        if close { connection.channel.close(promise: nil) }
    }

    private func closeExpired() {
        let expired = pool.withLockedValue { $0.state.expire(now: .now) }
        for connection in expired { connection.channel.close(promise: nil) }
    }

    /// A failure to connect, in the router's terms: no request was sent.
    static func connectFailure(_ error: any Error) -> any Error {
        if error is CancellationError || error is UpstreamFailure { return error }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return UpstreamFailure(.connect, "Could not connect to the provider in time", neverReachedUpstream: true)
        }
        return UpstreamFailure(.connect, "Could not connect to the provider: \(error)", neverReachedUpstream: true)
    }
}

/// An upstream URL taken apart: where to connect and what to ask for.
struct UpstreamTarget: Sendable, Hashable {
    var origin: UpstreamOrigin
    /// The path and query, starting with `/`.
    var path: String
    /// The `Host` header: the host, with the port when it is not the scheme's default.
    var hostHeader: String

    /// Reads `http[s]://host[:port][/path][?query]`; IPv6 literals are bracketed.
    init(_ url: String) throws(UpstreamFailure) {
        let tls: Bool
        var rest: Substring
        if url.hasPrefix("https://") {
            tls = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("http://") {
            tls = false
            rest = url.dropFirst(7)
        } else {
            throw UpstreamFailure(.connect, "Not an http or https URL: \(url)", neverReachedUpstream: true)
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...].prefix { $0 != "#" })
        if path.isEmpty || path.first == "?" { path = "/" + path }
        rest = authority
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }  // no credentials in URLs
        var host: Substring
        var port: Int?
        if rest.first == "[" {
            guard let close = rest.firstIndex(of: "]") else {
                throw UpstreamFailure(.connect, "Bad host in \(url)", neverReachedUpstream: true)
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.first == ":" { port = Int(after.dropFirst()) ?? -1 }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            port = Int(rest[rest.index(after: colon)...]) ?? -1
        } else {
            host = rest
        }
        let defaultPort = tls ? 443 : 80
        let resolvedPort = port ?? defaultPort
        guard !host.isEmpty, (1...65535).contains(resolvedPort) else {
            throw UpstreamFailure(.connect, "Bad host or port in \(url)", neverReachedUpstream: true)
        }
        origin = UpstreamOrigin(tls: tls, host: String(host), port: resolvedPort)
        self.path = path
        let bracketed = host.contains(":") ? "[\(host)]" : String(host)
        hostHeader = resolvedPort == defaultPort ? bracketed : "\(bracketed):\(resolvedPort)"
    }
}

extension String {
    /// An IPv4 or IPv6 literal (no server name to send for TLS).
    var isIPAddress: Bool {
        (try? SocketAddress(ipAddress: self, port: 0)) != nil
    }
}

/// Holds the body sequence's iterator. One reader only: the body's iterator is advanced by one
/// task at a time (`UpstreamBody` hands out one iterator per response). A body cut short because
/// the reading task was cancelled ends in `CancellationError`, not in a quiet end of stream.
final class ProducerIteratorBox: @unchecked Sendable {
    var base: UpstreamBodySequence.AsyncIterator
    init(_ base: UpstreamBodySequence.AsyncIterator) { self.base = base }

    func next() async throws -> ByteBuffer? {
        let next = try await base.next()
        if next == nil { try Task.checkCancellation() }
        return next
    }
}
