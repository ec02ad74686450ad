import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

extension ChatPipeline {
    // MARK: One attempt

    /// One upstream call with its watchdog: the call and a wait on the shared `watch` race in a
    /// task group; the wait wins (and cancels the call) when the first token or the next chunk is
    /// overdue.
    func runAttempt(
        _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?
    ) async throws -> AttemptResult {
        let timeouts = configuration.timeouts
        let clock = self.clock
        return try await withThrowingTaskGroup(of: AttemptResult?.self) { group in
            group.addTask { [watch] in
                throw try await watch.wait { () -> UpstreamFailure? in
                    let (deadline, phase) = progress.withLockedValue { state in
                        state.firstToken == nil
                            ? (state.lastActivity + timeouts.firstToken, UpstreamFailure.Kind.firstTokenTimeout)
                            : (state.lastActivity + timeouts.stall, UpstreamFailure.Kind.stall)
                    }
                    guard clock.now >= deadline else { return nil }
                    return UpstreamFailure(
                        phase, phase == .stall ? "The provider stopped sending tokens" : "The provider did not send a first token in time")
                }
            }
            group.addTask {
                try await self.callUpstream(attempt, prepared: prepared, progress: progress, emit: emit)
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let result = next { return result }
            }
            throw CancellationError()
        }
    }

    func callUpstream(
        _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?
    ) async throws -> AttemptResult {
        try await callUpstream(
            ProviderAdapters.adapter(for: attempt.provider.format), attempt, prepared: prepared, progress: progress,
            emit: emit)
    }

    func callUpstream<Adapter: ProviderAdapter>(
        _ adapter: Adapter, _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?
    ) async throws -> AttemptResult {
        let request = adapter.makeRequest(prepared.request, attempt: attempt, apiKey: providerKeys[attempt.provider.slug])
        let response: UpstreamResponse
        do {
            response = try await transport.send(request)
        } catch let failure as UpstreamFailure where !Task.isCancelled {
            throw failure  // the transport says what went wrong
        } catch  where !(error is CancellationError) && !Task.isCancelled {
            throw UpstreamFailure(.connect, "Could not connect to the provider: \(error)")
        }
        progress.withLockedValue { $0.lastActivity = clock.now }
        guard (200..<300).contains(response.status) else {
            let body = try await response.body.collect(upTo: 64 * 1024)
            throw adapter.failure(
                status: response.status, body: body,
                retryAfter: response.header("retry-after").flatMap { Int($0) })
        }
        var parser = SSEParser()
        var decoder = adapter.makeDecoder(for: prepared.request)
        var accumulator = CompletionAccumulator()
        var usage: TokenUsage?
        var done = false
        var delivered = 0
        var held: [CompletionDelta] = []
        // Each output piece is at least one token: more pieces than the reservation's completion
        // tokens means the upstream ignored the `max_tokens` it was sent.
        let completionBound = attempt.completionLimit(for: prepared.request) * prepared.request.choices
        var overshot = false

        func handle(_ events: [SSEEvent]) throws {
            for event in events where !done {
                for output in try decoder.decode(event) {
                    switch output {
                    case .delta(var delta):
                        var pieces = delta.outputPieces
                        if delivered + pieces > completionBound {
                            // Stop relaying (and billing) at the bound; dropping the body cancels the upstream.
                            overshot = true
                            done = true
                            delta = CompletionDelta(
                                choices: [["index": 0, "delta": [:], "finish_reason": "length", "native_finish_reason": "length"]],
                                upstreamID: delta.upstreamID, systemFingerprint: delta.systemFingerprint)
                            pieces = 0
                        }
                        delivered += pieces
                        progress.withLockedValue { state in
                            state.delivered += pieces
                            if state.firstToken == nil { state.firstToken = clock.now }
                            if state.upstreamID == nil { state.upstreamID = delta.upstreamID }
                        }
                        if let emit {
                            // Deltas without output (the opening role chunk) wait for the first
                            // token: until one reaches the client, the request can still fail over.
                            if delivered == 0 && delta.finishReason == nil {
                                held.append(delta)
                            } else {
                                for waiting in held { emit(waiting, attempt) }
                                held.removeAll()
                                emit(delta, attempt)
                            }
                        }
                        accumulator.add(delta)
                        if overshot { return }
                    case .usage(let reported):
                        usage = reported
                        progress.withLockedValue { $0.usage = reported }
                    case .done:
                        done = true
                    }
                }
            }
        }

        for try await buffer in response.body {
            progress.withLockedValue { $0.lastActivity = clock.now }
            try handle(try parser.feed(buffer))
            if done {
                // What may follow is the body's terminator: the connection can serve again. (The
                // overshoot cut stops without this, which closes the connection and so cancels the call.)
                if !overshot { response.body.finishQuietly() }
                break
            }
        }
        if !done, let last = parser.finish() { try handle([last]) }
        if overshot {
            logger.warning(
                "the provider went past max_tokens; relaying stopped at the reserved bound",
                metadata: [
                    "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)", "bound": "\(completionBound)",
                ])
            usage = nil  // a count from before the cut is not the whole answer; the pieces relayed are
        }
        guard done || accumulator.finishReason != nil else {
            throw UpstreamFailure(.disconnected, "The provider closed the stream before it ended")
        }
        if accumulator.finishReason == nil && delivered == 0 {
            throw UpstreamFailure(.malformed, "The provider ended the stream without a completion")
        }
        return AttemptResult(
            attempt: attempt, usage: usage, accumulator: accumulator, delivered: delivered,
            finishReason: accumulator.finishReason, firstTokenAt: progress.withLockedValue { $0.firstToken })
    }
}
