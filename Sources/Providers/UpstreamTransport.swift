import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// An HTTP request to an upstream provider.
public struct UpstreamRequest: Sendable {
    public var url: String
    public var headers: [(String, String)]
    public var body: ByteBuffer
    /// Stops the call from outside the task that makes it (a watchdog, a departed client).
    public var abort: UpstreamAbort?

    public init(url: String, headers: [(String, String)], body: ByteBuffer, abort: UpstreamAbort? = nil) {
        self.url = url
        self.headers = headers
        self.body = body
        self.abort = abort
    }
}

/// Stops one upstream call from outside the task making it: the call then fails as a dropped
/// connection would (an `UpstreamFailure`), wherever it is — connecting, waiting for the head,
/// or streaming the body — and the connection is closed. Cancelling the task does the same, but
/// a task cannot be un-cancelled: an attempt stopped by its watchdog must leave its request free
/// to fail over, so the attempt runs in the request's task and is stopped through this instead.
public final class UpstreamAbort: Sendable {
    private struct State {
        var aborted = false
        var action: (@Sendable () -> Void)?
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    /// Stops the call (once; later calls do nothing).
    public func abort() {
        let action = state.withLockedValue { state -> (@Sendable () -> Void)? in
            guard !state.aborted else { return nil }
            state.aborted = true
            defer { state.action = nil }
            return state.action
        }
        action?()
    }

    public var isAborted: Bool { state.withLockedValue { $0.aborted } }

    /// For transports: what stopping the call does in its current phase, replacing the previous
    /// phase's. Runs at once when the call was already stopped.
    public func onAbort(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLockedValue { state -> Bool in
            if state.aborted { return true }
            state.action = action
            return false
        }
        if now { action() }
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
    /// task cancels the upstream request, including a body being streamed, and so must
    /// `request.abort` (the router's watchdogs and client-gone checks rely on it). Network failures,
    /// sending or reading the body, are thrown as `UpstreamFailure` (`.connect` or
    /// `.disconnected`), so callers never see the transport's own error types.
    func send(_ request: UpstreamRequest) async throws -> UpstreamResponse
}
