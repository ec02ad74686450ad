import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Testing

@testable import Providers

/// The pooled SwiftNIO transport against a real HTTP/1.1 server on loopback: keep-alive reuse,
/// cancellation by closing, backpressure, limits, failures in the router's terms, and TLS.
@Suite struct PooledUpstreamTransportTests {
    @Test func sequentialRequestsReuseOneConnection() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            for round in 0..<5 {
                let body = try await transport.send(server.request("/chunks?count=20&size=100")).body.collect(upTo: 1 << 20)
                #expect(body.readableBytes == 2000, "round \(round)")
            }
            #expect(server.accepted == 1)
            #expect(transport.connectionCounts(server.origin) == (open: 1, idle: 1))
        }
    }

    @Test func theRequestArrivesWithItsHostHeaderBodyAndLength() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            let payload = String(repeating: "é", count: 50_000)
            let response = try await transport.send(
                UpstreamRequest(
                    url: "http://127.0.0.1:\(server.port)/echo?x=1", headers: [("x-test", "yes")],
                    body: ByteBuffer(string: payload)))
            #expect(response.status == 200)
            let echoed = String(buffer: try await response.body.collect(upTo: 1 << 20))
            #expect(echoed == "POST /echo?x=1 host=127.0.0.1:\(server.port) x-test=yes length=100000\n" + payload)
        }
    }

    @Test func aReaderThatStopsEarlyClosesTheConnectionAndTheServerSeesIt() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            do {
                let response = try await transport.send(server.request("/chunks?count=1000000&size=1000&delayMs=5"))
                let iterator = response.body.makeAsyncIterator()
                _ = try await iterator.next()
            }
            try await eventually { server.closedByClient == 1 }
            try await eventually { transport.connectionCounts(server.origin) == (open: 0, idle: 0) }
        }
    }

    @Test func finishingQuietlyAfterTheStreamsOwnEndKeepsTheConnection() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            for _ in 0..<3 {
                let response = try await transport.send(server.request("/chunks?count=3&size=10&tailDelayMs=50"))
                let iterator = response.body.makeAsyncIterator()
                for _ in 0..<3 { _ = try await iterator.next() }
                response.body.finishQuietly()
                // The body's end arrives 50 ms later, and with it the connection is idle again.
                try await eventually { transport.connectionCounts(server.origin) == (open: 1, idle: 1) }
            }
            #expect(server.accepted == 1)
        }
    }

    @Test func aSlowReaderHoldsBackTheUpstreamInsteadOfBufferingIt() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            // 192 MB offered; the reader takes one buffer and waits. Without backpressure the
            // transport would read on until the server had written everything.
            let response = try await transport.send(server.request("/chunks?count=3000&size=64000"))
            let iterator = response.body.makeAsyncIterator()
            _ = try await iterator.next()
            try await Task.sleep(for: .milliseconds(500))
            let written = server.bytesWritten
            #expect(written < 50_000_000, "the server wrote \(written) bytes to a reader that took one buffer")
            var total = 0
            while let chunk = try await iterator.next() { total += chunk.readableBytes }
            #expect(total > 191_000_000)
        }
    }

    @Test func connectionsAreLimitedPerOriginAndIdleOnesSeparately() async throws {
        try await withServer { server in
            let limits = UpstreamPoolLimits(maxConnectionsPerOrigin: 4, maxIdlePerOrigin: 2, idleTimeout: .seconds(60))
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2), limits: limits)
            defer { Task { await transport.shutdown() } }
            var open: [UpstreamResponse] = []
            // The answers end only when the test opens the gate, so all four are open at once.
            for _ in 0..<4 { open.append(try await transport.send(server.request("/chunks?count=2&size=10&gated=1"))) }
            #expect(transport.connectionCounts(server.origin) == (open: 4, idle: 0))
            await #expect(throws: UpstreamFailure.self) {
                _ = try await transport.send(server.request("/chunks?count=1&size=1"))
            }
            server.openGate()
            for response in open { _ = try await response.body.collect(upTo: 1000) }
            try await eventually { transport.connectionCounts(server.origin) == (open: 2, idle: 2) }
        }
    }

    @Test func idleConnectionsExpire() async throws {
        try await withServer { server in
            // Long enough to see the connection idle first even when the suites beside this one
            // hold up this task for a few seconds.
            let limits = UpstreamPoolLimits(idleTimeout: .seconds(6))
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2), limits: limits)
            defer { Task { await transport.shutdown() } }
            _ = try await transport.send(server.request("/chunks?count=1&size=1")).body.collect(upTo: 10)
            try await eventually { transport.connectionCounts(server.origin).idle == 1 }
            // Closed once idle for 6 s, by a sweep every 3 s.
            try await eventually(within: .seconds(20)) { transport.connectionCounts(server.origin) == (open: 0, idle: 0) }
            try await eventually { server.closedByClient == 1 }
        }
    }

    @Test func aConnectionTheServerClosesIsReplaced() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            // Said in the answer (`connection: close`): the connection is not kept.
            _ = try await transport.send(server.request("/chunks?count=1&size=1&close=announced")).body.collect(upTo: 10)
            try await eventually { transport.connectionCounts(server.origin) == (open: 0, idle: 0) }
            // Closed later while idle, unannounced (a server's keep-alive timeout): seen and dropped.
            _ = try await transport.send(server.request("/chunks?count=1&size=1&close=idle")).body.collect(upTo: 10)
            try await eventually { transport.connectionCounts(server.origin) == (open: 0, idle: 0) }
            let body = try await transport.send(server.request("/chunks?count=2&size=5")).body.collect(upTo: 100)
            #expect(body.readableBytes == 10)
            #expect(server.accepted == 3)
        }
    }

    @Test func failuresAreTheRoutersOwn() async throws {
        let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
        defer { Task { await transport.shutdown() } }
        // Nothing listens on a port we just released.
        let port = try await freePort()
        let refused = await #expect(throws: UpstreamFailure.self) {
            _ = try await transport.send(UpstreamRequest(url: "http://127.0.0.1:\(port)/", headers: [], body: ByteBuffer()))
        }
        #expect(refused?.kind == .connect)
        #expect(refused?.neverReachedUpstream == true)
        let badURL = await #expect(throws: UpstreamFailure.self) {
            _ = try await transport.send(UpstreamRequest(url: "ftp://example.com/", headers: [], body: ByteBuffer()))
        }
        #expect(badURL?.neverReachedUpstream == true)
        try await withServer { server in
            let hungUp = await #expect(throws: UpstreamFailure.self) {
                _ = try await transport.send(server.request("/hangup"))
            }
            #expect(hungUp?.kind == .disconnected)
            #expect(hungUp?.neverReachedUpstream == false)
            let cut = await #expect(throws: UpstreamFailure.self) {
                _ = try await transport.send(server.request("/chunks?count=5&size=10&cutAfter=2")).body.collect(upTo: 1000)
            }
            #expect(cut?.kind == .disconnected)
        }
    }

    @Test func cancellingTheCallerClosesTheConnection() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            let call = Task { try await transport.send(server.request("/silent")) }
            try await eventually { server.accepted == 1 }
            call.cancel()
            await #expect(throws: CancellationError.self) { _ = try await call.value }
            try await eventually { server.closedByClient == 1 }
            #expect(transport.connectionCounts(server.origin) == (open: 0, idle: 0))
        }
    }

    @Test func anAbortedCallFailsInEveryPhaseAndClosesOnlyItsOwnConnection() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            // Before anything was sent: no connection is made.
            let early = UpstreamAbort()
            early.abort()
            var request = server.request("/chunks?count=3&size=10")
            request.abort = early
            await #expect(throws: UpstreamFailure.self) { _ = try await transport.send(request) }
            #expect(server.accepted == 0)

            // Waiting for the head.
            let waiting = UpstreamAbort()
            request = server.request("/silent")
            request.abort = waiting
            let call = Task { [request] in try await transport.send(request) }
            try await eventually { server.accepted == 1 }
            waiting.abort()
            await #expect(throws: UpstreamFailure.self) { _ = try await call.value }
            try await eventually { server.closedByClient == 1 }

            // While the body streams.
            let streaming = UpstreamAbort()
            request = server.request("/chunks?count=1000000&size=1000&delayMs=5")
            request.abort = streaming
            let response = try await transport.send(request)
            let iterator = response.body.makeAsyncIterator()
            _ = try await iterator.next()
            streaming.abort()
            await #expect(throws: UpstreamFailure.self) { while try await iterator.next() != nil {} }
            try await eventually { server.closedByClient == 2 }

            // After its body ended: the pooled connection serves the next call undisturbed.
            let late = UpstreamAbort()
            request = server.request("/chunks?count=3&size=10")
            request.abort = late
            #expect(try await transport.send(request).body.collect(upTo: 1 << 20).readableBytes == 30)
            late.abort()
            #expect(try await transport.send(server.request("/chunks?count=3&size=10")).body.collect(upTo: 1 << 20).readableBytes == 30)
            #expect(server.accepted == 3)
            #expect(transport.connectionCounts(server.origin) == (open: 1, idle: 1))
        }
    }

    @Test func tlsWithTheGivenTrustRoots() async throws {
        let (certificate, key) = try selfSignedCertificate()
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(certificate)], privateKey: .privateKey(key))
        tls.applicationProtocols = ["http/1.1"]
        try await withServer(tls: try NIOSSLContext(configuration: tls)) { server in
            let trusting = try PooledUpstreamTransport(connectTimeout: .seconds(2), trustRoots: [certificate])
            defer { Task { await trusting.shutdown() } }
            let url = "https://localhost:\(server.port)/chunks?count=3&size=7"
            let body = try await trusting.send(UpstreamRequest(url: url, headers: [], body: ByteBuffer())).body.collect(upTo: 100)
            #expect(body.readableBytes == 21)

            let systemRoots = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await systemRoots.shutdown() } }
            let untrusted = await #expect(throws: UpstreamFailure.self) {
                _ = try await systemRoots.send(UpstreamRequest(url: url, headers: [], body: ByteBuffer()))
            }
            #expect(untrusted?.neverReachedUpstream == true)
        }
    }

    @Test func theTransportOwnsHostLengthAndHopByHopHeaders() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            let response = try await transport.send(
                UpstreamRequest(
                    url: "http://127.0.0.1:\(server.port)/echo",
                    headers: [
                        ("Host", "evil.example"), ("x-test", "kept"), ("Content-Length", "999"), ("Transfer-Encoding", "chunked"),
                        ("Connection", "upgrade"), ("Upgrade", "websocket"), ("TE", "trailers"),
                    ],
                    body: ByteBuffer(string: "hi")))
            let echoed = String(buffer: try await response.body.collect(upTo: 1 << 16))
            #expect(echoed == "POST /echo host=127.0.0.1:\(server.port) x-test=kept length=2 hosts=1 upgrade=\nhi")
        }
    }

    @Test func anUpstreamSwitchingProtocolsIsAFailureNotAHang() async throws {
        try await withServer { server in
            let transport = try PooledUpstreamTransport(connectTimeout: .seconds(2))
            defer { Task { await transport.shutdown() } }
            let failure = await #expect(throws: UpstreamFailure.self) { _ = try await transport.send(server.request("/switch")) }
            #expect(failure?.kind == .malformed)
        }
    }

    @Test func aTLSHandshakeThatNeverCompletesTimesOut() async throws {
        // A listener that accepts and never answers: TCP connects, TLS never starts.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { $0.eventLoop.makeSucceededVoidFuture() }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { silent.close(promise: nil) }
        let transport = try PooledUpstreamTransport(connectTimeout: .milliseconds(300))
        defer { Task { await transport.shutdown() } }
        let started = ContinuousClock.now
        let failure = await #expect(throws: UpstreamFailure.self) {
            _ = try await transport.send(
                UpstreamRequest(url: "https://127.0.0.1:\(silent.localAddress!.port!)/", headers: [], body: ByteBuffer()))
        }
        #expect(failure?.kind == .connect)
        #expect(failure?.neverReachedUpstream == true)
        #expect(ContinuousClock.now - started < .seconds(5))
        try await eventually {
            transport.connectionCounts(UpstreamOrigin(tls: true, host: "127.0.0.1", port: silent.localAddress!.port!)) == (0, 0)
        }
    }

    @Test func urlsAreTakenApart() throws {
        let plain = try UpstreamTarget("http://provider.internal:8080/v1/chat/completions?x=1#frag")
        #expect(plain.origin == UpstreamOrigin(tls: false, host: "provider.internal", port: 8080))
        #expect(plain.path == "/v1/chat/completions?x=1")
        #expect(plain.hostHeader == "provider.internal:8080")
        let secure = try UpstreamTarget("https://api.example.com")
        #expect(secure.origin == UpstreamOrigin(tls: true, host: "api.example.com", port: 443))
        #expect(secure.path == "/")
        #expect(secure.hostHeader == "api.example.com")
        let ipv6 = try UpstreamTarget("http://[::1]:9000/x")
        #expect(ipv6.origin == UpstreamOrigin(tls: false, host: "::1", port: 9000))
        #expect(ipv6.hostHeader == "[::1]:9000")
        #expect(throws: UpstreamFailure.self) { try UpstreamTarget("http://host:99999/") }
        #expect(throws: UpstreamFailure.self) { try UpstreamTarget("http://:80/") }
        #expect(throws: UpstreamFailure.self) { try UpstreamTarget("file:///etc/passwd") }
    }
}

// MARK: - A test server

/// An HTTP/1.1 server on loopback with routes that stream, echo, hang up or stay silent, and
/// counters for what its clients did.
final class TestUpstreamServer: Sendable {
    let port: Int
    let channel: any Channel
    private let counters: NIOLockedValueBox<(accepted: Int, closedByClient: Int, bytesWritten: Int)>

    var accepted: Int { counters.withLockedValue { $0.accepted } }
    var closedByClient: Int { counters.withLockedValue { $0.closedByClient } }
    var bytesWritten: Int { counters.withLockedValue { $0.bytesWritten } }
    private let gate: NIOLockedValueBox<Bool>
    /// Lets the answers asked for with `gated=1` end.
    func openGate() { gate.withLockedValue { $0 = true } }
    var origin: UpstreamOrigin { UpstreamOrigin(tls: false, host: "127.0.0.1", port: port) }

    func request(_ path: String) -> UpstreamRequest {
        UpstreamRequest(
            url: "http://127.0.0.1:\(port)\(path)", headers: [("content-type", "application/json")], body: ByteBuffer(string: "{}"))
    }

    init(tls: NIOSSLContext?) async throws {
        let counters = NIOLockedValueBox((accepted: 0, closedByClient: 0, bytesWritten: 0))
        let gate = NIOLockedValueBox(false)
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                counters.withLockedValue { $0.accepted += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                    try pipeline.configureHTTPServerPipeline()
                    try pipeline.addHandler(Routes(counters: counters, gate: gate))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress!.port!
        self.counters = counters
        self.gate = gate
    }

    func close() async { try? await channel.close() }

    final class Routes: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let counters: NIOLockedValueBox<(accepted: Int, closedByClient: Int, bytesWritten: Int)>
        var head: HTTPRequestHead?
        var body = ByteBuffer()
        var responding = false

        let gate: NIOLockedValueBox<Bool>
        var gated = false

        init(counters: NIOLockedValueBox<(accepted: Int, closedByClient: Int, bytesWritten: Int)>, gate: NIOLockedValueBox<Bool>) {
            self.counters = counters
            self.gate = gate
        }

        func channelInactive(context: ChannelHandlerContext) {
            counters.withLockedValue { $0.closedByClient += 1 }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var part): body.writeBuffer(&part)
            case .end: respond(context)
            }
        }

        private func respond(_ context: ChannelHandlerContext) {
            guard let head else { return }
            let components = URLComponents(string: head.uri)
            let query = Dictionary(uniqueKeysWithValues: (components?.queryItems ?? []).map { ($0.name, Int($0.value ?? "") ?? 0) })
            switch components?.path {
            case "/echo":
                let headers = head.headers
                var text = "POST \(head.uri) host=\(headers["host"].first ?? "") x-test=\(headers["x-test"].first ?? "")"
                text += " length=\(headers["content-length"].joined(separator: ","))"
                if head.uri == "/echo" { text += " hosts=\(headers["host"].count) upgrade=\(headers["upgrade"].joined())" }
                text += "\n"
                var out = ByteBuffer(string: text)
                out.writeImmutableBuffer(body)
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(out))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case "/switch":
                var switching = HTTPResponseHead(version: .http1_1, status: .switchingProtocols)
                switching.headers.add(name: "upgrade", value: "websocket")
                switching.headers.add(name: "connection", value: "upgrade")
                context.writeAndFlush(wrapOutboundOut(.head(switching)), promise: nil)
            case "/hangup":
                context.close(promise: nil)
            case "/silent":
                break
            default:
                let close = components?.queryItems?.first { $0.name == "close" }?.value
                gated = query["gated"] == 1
                var responseHead = HTTPResponseHead(version: .http1_1, status: .ok)
                responseHead.headers.add(name: "content-type", value: "text/event-stream")
                if close == "announced" { responseHead.headers.add(name: "connection", value: "close") }
                context.writeAndFlush(wrapOutboundOut(.head(responseHead)), promise: nil)
                streamChunks(
                    context, remaining: query["count"] ?? 1, size: query["size"] ?? 1, delayMs: query["delayMs"] ?? 0,
                    cutAfter: query["cutAfter"], sent: 0, tailDelayMs: query["tailDelayMs"] ?? 0,
                    closeAtEnd: close != nil)
            }
        }

        private func streamChunks(
            _ context: ChannelHandlerContext, remaining: Int, size: Int, delayMs: Int, cutAfter: Int?, sent: Int,
            tailDelayMs: Int, closeAtEnd: Bool
        ) {
            guard context.channel.isActive else { return }
            if let cutAfter, sent == cutAfter {
                context.close(promise: nil)
                return
            }
            guard remaining > 0 else {
                if gated && !gate.withLockedValue({ $0 }) {
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) {
                        self.streamChunks(
                            context, remaining: 0, size: size, delayMs: delayMs, cutAfter: cutAfter, sent: sent,
                            tailDelayMs: tailDelayMs, closeAtEnd: closeAtEnd)
                    }
                    return
                }
                let finish = {
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                        if closeAtEnd {
                            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(50)) { context.close(promise: nil) }
                        }
                    }
                }
                if tailDelayMs > 0 {
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(tailDelayMs))) { finish() }
                } else {
                    finish()
                }
                return
            }
            let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: size)
            let next = {
                self.streamChunks(
                    context, remaining: remaining - 1, size: size, delayMs: delayMs, cutAfter: cutAfter, sent: sent + 1,
                    tailDelayMs: tailDelayMs, closeAtEnd: closeAtEnd)
            }
            // Writing waits for the socket to take the previous chunk, so a client that stops
            // reading stops the server too (what `bytesWritten` shows).
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(chunk)))).assumeIsolated().whenSuccess {
                self.counters.withLockedValue { $0.bytesWritten += size }
                if delayMs > 0 {
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delayMs))) { next() }
                } else {
                    next()
                }
            }
        }
    }
}

func withServer(tls: NIOSSLContext? = nil, _ body: (TestUpstreamServer) async throws -> Void) async throws {
    let server = try await TestUpstreamServer(tls: tls)
    do {
        try await body(server)
    } catch {
        await server.close()
        throw error
    }
    await server.close()
}

/// Waits up to five seconds for `condition`.
func eventually(
    within limit: Duration = .seconds(5), _ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    #expect(condition(), sourceLocation: sourceLocation)
}

func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress!.port!
    try await channel.close()
    return port
}

/// A throwaway certificate for `localhost` and its key, made by openssl.
func selfSignedCertificate() throws -> (NIOSSLCertificate, NIOSSLPrivateKey) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("upstream-tls-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost", "-keyout", directory.appendingPathComponent("key.pem").path,
        "-out", directory.appendingPathComponent("cert.pem").path,
    ]
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    let certificate = try NIOSSLCertificate(bytes: Array(try Data(contentsOf: directory.appendingPathComponent("cert.pem"))), format: .pem)
    let key = try NIOSSLPrivateKey(file: directory.appendingPathComponent("key.pem").path, format: .pem)
    return (certificate, key)
}
