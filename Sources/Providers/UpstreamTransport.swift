import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// An HTTP request to an upstream provider.
public struct UpstreamRequest: Sendable {
    public var url: String
    public var headers: [(String, String)]
    public var body: ByteBuffer

    public init(url: String, headers: [(String, String)], body: ByteBuffer) {
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// The head of an upstream response and its body, streamed.
public struct UpstreamResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: UpstreamBody

    public init(status: Int, headers: [(String, String)], body: UpstreamBody) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// An upstream response body as an async sequence of byte buffers, whatever the transport.
public struct UpstreamBody: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let makeNext: @Sendable () -> (@Sendable () async throws -> ByteBuffer?)

    public init(makeNext: @escaping @Sendable () -> (@Sendable () async throws -> ByteBuffer?)) {
        self.makeNext = makeNext
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let next: @Sendable () async throws -> ByteBuffer?
        public mutating func next() async throws -> ByteBuffer? { try await next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(next: makeNext()) }

    /// Reads the whole body, failing beyond `limit` bytes.
    public func collect(upTo limit: Int) async throws -> ByteBuffer {
        var result = ByteBuffer()
        for try await var chunk in self {
            guard result.readableBytes + chunk.readableBytes <= limit else { throw UpstreamBodyTooLarge() }
            result.writeBuffer(&chunk)
        }
        return result
    }
}

public struct UpstreamBodyTooLarge: Error {}

/// The seam between the router and the network — for provider calls and for requests forwarded
/// to another region's node. AsyncHTTPClient serves today; a lean pooled SwiftNIO client can
/// replace it without touching adapters or the pipeline (ADR 0001).
public protocol UpstreamTransport: Sendable {
    /// Sends `request` (a POST) and returns once the response head arrived. Cancelling the calling
    /// task cancels the upstream request, including a body being streamed. Network failures,
    /// sending or reading the body, are thrown as `UpstreamFailure` (`.connect` or
    /// `.disconnected`), so callers never see the transport's own error types.
    func send(_ request: UpstreamRequest) async throws -> UpstreamResponse
}

/// `UpstreamTransport` over one shared AsyncHTTPClient `HTTPClient`.
public struct AsyncHTTPClientTransport: UpstreamTransport {
    let client: HTTPClient

    private init(client: HTTPClient) { self.client = client }

    /// A transport on its own client (close it with `shutdown()`): connect timeout, pooled
    /// connections, no redirects. `trustRoots` replaces the system's CAs (the peers' CA, when
    /// forwarding to other nodes over HTTPS).
    public static func make(connectTimeout: Duration, trustRoots: [NIOSSLCertificate]? = nil) -> AsyncHTTPClientTransport {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let trustRoots { tls.trustRoots = .certificates(trustRoots) }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout = .init(connect: TimeAmount(connectTimeout), read: nil)
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 512)
        configuration.decompression = .disabled
        return AsyncHTTPClientTransport(client: HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration))
    }

    /// Closes the client's connections.
    public func shutdown() async throws { try await client.shutdown() }

    public func send(_ request: UpstreamRequest) async throws -> UpstreamResponse {
        var outbound = HTTPClientRequest(url: request.url)
        outbound.method = .POST
        for (name, value) in request.headers { outbound.headers.add(name: name, value: value) }
        outbound.body = .bytes(request.body)
        // Deadlines are enforced by the pipeline's watchdog (connect, first token, stall), which
        // cancels this task; the transport's own deadline is only a last resort.
        let response: HTTPClientResponse
        do {
            response = try await client.execute(outbound, timeout: .hours(1))
        } catch {
            throw Self.failure(sending: error)
        }
        let body = response.body
        return UpstreamResponse(
            status: Int(response.status.code),
            headers: response.headers.map { ($0.name, $0.value) },
            body: UpstreamBody {
                let iterator = IteratorBox(body.makeAsyncIterator())
                return {
                    do {
                        return try await iterator.next()
                    } catch {
                        throw Self.failure(reading: error)
                    }
                }
            }
        )
    }

    /// A failure before the response head, in the router's terms. Cancellation stays itself.
    static func failure(sending error: any Error) -> any Error {
        if error is CancellationError || error is UpstreamFailure { return error }
        if let client = error as? HTTPClientError {
            switch client {
            case .cancelled:
                // Our own cancellation; otherwise the client or its pool was shut down under the call.
                return Task.isCancelled ? CancellationError() : UpstreamFailure(.connect, "The provider call was cancelled: \(client)")
            case .connectTimeout, .socksHandshakeTimeout, .tlsHandshakeTimeout:
                return UpstreamFailure(.connect, "Could not connect to the provider in time", neverReachedUpstream: true)
            case .remoteConnectionClosed:
                return UpstreamFailure(.disconnected, "The provider closed the connection without answering")
            default:
                return UpstreamFailure(.connect, "Could not connect to the provider: \(client)")
            }
        }
        return UpstreamFailure(.connect, "Could not connect to the provider: \(error)", neverReachedUpstream: neverConnected(error))
    }

    /// A failure while the body streams in.
    static func failure(reading error: any Error) -> any Error {
        if error is CancellationError || error is UpstreamFailure { return error }
        if let client = error as? HTTPClientError {
            switch client {
            case .cancelled:
                return Task.isCancelled ? CancellationError() : UpstreamFailure(.disconnected, "The provider call was cancelled: \(client)")
            case .remoteConnectionClosed, .readTimeout: return UpstreamFailure(.disconnected, "The provider closed the connection")
            default: return UpstreamFailure(.disconnected, "The provider connection failed: \(client)")
            }
        }
        return UpstreamFailure(.disconnected, "The provider connection failed: \(error)")
    }

    /// Errors that mean no connection was made at all.
    static func neverConnected(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        // Refused is only ever an answer to a connect; "unreachable" can also end an established
        // connection after the request was written, so on its own it proves nothing.
        if let error = error as? IOError, error.errnoCode == ECONNREFUSED { return true }
        return false
    }
}

/// Holds a non-Sendable iterator that is only ever advanced by one task at a time.
final class IteratorBox<Base: AsyncIteratorProtocol>: @unchecked Sendable where Base.Element == ByteBuffer {
    var base: Base
    init(_ base: Base) { self.base = base }
    func next() async throws -> ByteBuffer? { try await base.next() }
}
