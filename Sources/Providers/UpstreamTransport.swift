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
    let onFinishQuietly: @Sendable () -> Void

    public init(
        makeNext: @escaping @Sendable () -> (@Sendable () async throws -> ByteBuffer?),
        finishQuietly: @escaping @Sendable () -> Void = {}
    ) {
        self.makeNext = makeNext
        self.onFinishQuietly = finishQuietly
    }

    /// The reader has all it needs (the stream said it is complete) and stops reading: whatever
    /// is left of the body is discarded, and the connection serves again if the body ends soon.
    /// Stopping without this cancels the upstream call.
    public func finishQuietly() { onFinishQuietly() }

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
/// to another region's node. `PooledUpstreamTransport` serves it on SwiftNIO; tests put their own
/// behind it (ADR 0001).
public protocol UpstreamTransport: Sendable {
    /// Sends `request` (a POST) and returns once the response head arrived. Cancelling the calling
    /// task cancels the upstream request, including a body being streamed. Network failures,
    /// sending or reading the body, are thrown as `UpstreamFailure` (`.connect` or
    /// `.disconnected`), so callers never see the transport's own error types.
    func send(_ request: UpstreamRequest) async throws -> UpstreamResponse
}
