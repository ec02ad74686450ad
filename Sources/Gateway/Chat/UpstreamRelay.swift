import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

extension ChatPipeline {
    // MARK: One attempt

    /// One upstream call with its watchdog. The call runs in the request's own task; a tick on
    /// the shared `watch` stops it through an `UpstreamAbort` when the first token or the next
    /// chunk is overdue (the attempt then fails with that timeout, and the request may fail over)
    /// or when `clientGone` says the client left (it then ends in a `CancellationError`, as when
    /// the request's task is cancelled). No task of its own: a task per attempt kept its frames
    /// and slabs for as long as the stream ran.
    @inline(never)  // a frame of its own (see ChatPipeline)
    func runAttempt(
        _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (ByteBuffer) -> Void)?, clientGone: (@Sendable () -> Bool)?
    ) async throws -> AttemptResult {
        // A client that left while the previous attempt ended gets no further attempt sent.
        if clientGone?() == true { throw CancellationError() }
        let timeouts = configuration.timeouts
        let clock = self.clock
        let abort = UpstreamAbort()
        let stopped = NIOLockedValueBox<(any Error)?>(nil)
        let watchdog = watch.every {
            let reason: (any Error)?
            if clientGone?() == true {
                reason = CancellationError()
            } else {
                let (deadline, phase) = progress.withLockedValue { state in
                    state.firstToken == nil
                        ? (state.lastActivity + timeouts.firstToken, UpstreamFailure.Kind.firstTokenTimeout)
                        : (state.lastActivity + timeouts.stall, UpstreamFailure.Kind.stall)
                }
                guard clock.now >= deadline else { return true }
                reason = UpstreamFailure(
                    phase, phase == .stall ? "The provider stopped sending tokens" : "The provider did not send a first token in time")
            }
            stopped.withLockedValue { $0 = reason }
            abort.abort()
            return false
        }
        defer { watch.cancel(watchdog) }
        do {
            return try await callUpstream(attempt, prepared: prepared, progress: progress, emit: emit, abort: abort)
        } catch {
            // The watchdog's reason, when it stopped the call: the call itself only saw its connection close.
            throw stopped.withLockedValue { $0 } ?? error
        }
    }

    func callUpstream(
        _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (ByteBuffer) -> Void)?, abort: UpstreamAbort
    ) async throws -> AttemptResult {
        if let input = prepared.request.embeddings {
            return try await callEmbeddings(input, attempt, prepared: prepared, progress: progress, abort: abort)
        }
        return try await callUpstream(
            ProviderAdapters.adapter(for: attempt.provider.format), attempt, prepared: prepared, progress: progress,
            emit: emit, abort: abort)
    }

    /// One embeddings call: not streamed, so the first-token timeout covers the wait for the
    /// answer's head, and the stall timeout each gap while its body arrives.
    @inline(never)  // a frame of its own (see ChatPipeline)
    func callEmbeddings(
        _ input: ChatRequest.EmbeddingsInput, _ attempt: PlannedAttempt, prepared: PreparedChat,
        progress: NIOLockedValueBox<AttemptProgress>, abort: UpstreamAbort
    ) async throws -> AttemptResult {
        guard let calls = EmbeddingsWire.requests(input, attempt: attempt, apiKey: providerKeys[attempt.provider.slug]) else {
            throw UpstreamFailure(
                .status(400), "\(attempt.provider.name) takes no token-id inputs for embeddings", neverReachedUpstream: true)
        }
        let dimensions = input.dimensions ?? attempt.model.embeddingDimensions ?? 0
        var vectors: [[Float]] = []
        vectors.reserveCapacity(input.count)
        var reported: Int? = 0
        var headAt: ContinuousClock.Instant?
        for (var request, inputs) in calls {
            request.abort = abort
            if prepared.trace != nil { request.headers += progress.withLockedValue { $0.propagation } }
            let response: UpstreamResponse
            do {
                response = try await transport.send(request)
            } catch let failure as UpstreamFailure where !Task.isCancelled {
                throw failure
            } catch  where !(error is CancellationError) && !Task.isCancelled {
                throw UpstreamFailure(.connect, "Could not connect to the provider: \(error)")
            }
            let now = clock.now
            if headAt == nil { headAt = now }
            progress.withLockedValue {
                $0.lastActivity = now
                $0.firstToken = headAt
            }
            guard (200..<300).contains(response.status) else {
                let body = try await response.body.collect(upTo: 64 * 1024)
                throw ProviderAdapters.adapter(for: attempt.provider.format).failure(
                    status: response.status, body: body, retryAfter: response.header("retry-after").flatMap { Int($0) })
            }
            var body = ByteBuffer()
            for try await var chunk in response.body {
                guard body.readableBytes + chunk.readableBytes <= Self.maximumEmbeddingsAnswer else {
                    throw UpstreamFailure(.malformed, "Provider's embeddings answer is larger than \(Self.maximumEmbeddingsAnswer) bytes")
                }
                body.writeBuffer(&chunk)
                progress.withLockedValue { $0.lastActivity = clock.now }
            }
            let answer = try EmbeddingsWire.answer(body, format: attempt.provider.format, inputs: inputs, dimensions: dimensions)
            vectors += answer.vectors
            reported = answer.promptTokens.flatMap { tokens in reported.map { $0 + tokens } }
        }
        let usage = TokenUsage(promptTokens: reported ?? EmbeddingsWire.estimatedTokens(input), completionTokens: 0)
        progress.withLockedValue { $0.usage = usage }
        return AttemptResult(
            attempt: attempt, usage: usage, accumulator: CompletionAccumulator(), delivered: 0, finishReason: "stop",
            firstTokenAt: headAt, embeddings: vectors)
    }

    /// The largest embeddings answer read: a request's most values (`EmbeddingsSurface.maximumValues`)
    /// fit as JSON text, indented, with room to spare.
    static let maximumEmbeddingsAnswer = 64 << 20

    @inline(never)  // a frame of its own (see ChatPipeline)
    func callUpstream<Adapter: ProviderAdapter>(
        _ adapter: Adapter, _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (ByteBuffer) -> Void)?, abort: UpstreamAbort
    ) async throws -> AttemptResult {
        var request = adapter.makeRequest(prepared.request, attempt: attempt, apiKey: providerKeys[attempt.provider.slug])
        request.abort = abort
        // The attempt's trace context, so the provider's spans join the request's trace.
        if prepared.trace != nil { request.headers += progress.withLockedValue { $0.propagation } }
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
        var sawDelta = false
        // Events for the client from one upstream read, written to it together.
        var out: [UInt8] = []
        // Events without output (the opening role chunk) wait for the first token: until one
        // reaches the client, the request can still fail over.
        var held: [[UInt8]] = []
        // Each output piece is at least one token: more pieces than the reservation's completion
        // tokens means the upstream ignored the `max_tokens` it was sent.
        let completionBound = attempt.completionLimit(for: prepared.request) * prepared.request.choices
        var overshot = false
        // An OpenAI upstream: chunks are read by scanning, not parsing, and a streaming client
        // gets them relayed as bytes. The answer is assembled (collected) only when it is needed:
        // for a non-streaming client, or to store for an Idempotency-Key.
        let collect = emit == nil || prepared.idempotencyKey != nil
        let relay: OpenAIChunkRelay? =
            attempt.provider.format == .openai
            ? OpenAIChunkRelay(
                generationID: prepared.generationID, provider: attempt.provider.name, model: attempt.model.id,
                created: prepared.created, excludeReasoning: prepared.request.reasoning?.exclude ?? false)
            : nil

        /// Takes the event just written at `mark` in `out` as delivered, or holds it.
        func place(from mark: Int, hasOutput: Bool) {
            if !hasOutput && delivered == 0 {
                held.append(Array(out[mark...]))
                out.removeSubrange(mark...)
            } else if !held.isEmpty {
                let event = Array(out[mark...])
                out.removeSubrange(mark...)
                for waiting in held { out += waiting }
                held.removeAll()
                out += event
            }
        }

        /// The cut at the bound: a finish chunk instead of what went past it.
        func cut(_ upstreamID: String?, _ fingerprint: String?) -> CompletionDelta {
            overshot = true
            done = true
            return CompletionDelta(
                choices: [["index": 0, "delta": [:], "finish_reason": "length", "native_finish_reason": "length"]],
                upstreamID: upstreamID, systemFingerprint: fingerprint)
        }

        func take(_ delta: CompletionDelta, pieces: Int) {
            delivered += pieces
            sawDelta = true
            guard emit != nil else { return }
            let mark = out.count
            ChatResponses.writeChunk(delta, prepared: prepared, attempt: attempt, into: &out)
            place(from: mark, hasOutput: delivered > 0 || delta.finishReason != nil)
        }

        func handle(_ events: [SSEEvent]) throws {
            for event in events where !done {
                if let relay, event.event == nil, event.data != "[DONE]" {
                    let mark = out.count
                    var data = event.data
                    let relayed = data.withUTF8 {
                        relay.relay(
                            UnsafeRawBufferPointer($0), identity: accumulator.upstreamID == nil, collect: collect, into: &out)
                    }
                    if let relayed {
                        if let reported = relayed.usage { usage = reported }
                        guard relayed.wroteEvent else { continue }
                        if delivered + relayed.pieces > completionBound {
                            out.removeSubrange(mark...)
                            let finish = cut(accumulator.upstreamID, accumulator.systemFingerprint)
                            accumulator.add(finish)
                            take(finish, pieces: 0)
                            return
                        }
                        accumulator.noteIdentity(upstreamID: relayed.upstreamID, systemFingerprint: relayed.systemFingerprint)
                        // Every choice is recorded, finished or not, so a stream that ends with
                        // one of them unfinished is seen as cut short.
                        for part in relayed.parts { accumulator.add(part) }
                        delivered += relayed.pieces
                        sawDelta = true
                        if emit == nil {
                            out.removeSubrange(mark...)
                        } else {
                            place(from: mark, hasOutput: delivered > 0 || relayed.finishReason != nil)
                        }
                        continue
                    }
                }
                for output in try decoder.decode(event) {
                    switch output {
                    case .delta(let delta):
                        let pieces = delta.outputPieces
                        if delivered + pieces > completionBound {
                            // Stop relaying (and billing) at the bound; dropping the body cancels the upstream.
                            let finish = cut(delta.upstreamID, delta.systemFingerprint)
                            accumulator.add(finish)
                            take(finish, pieces: 0)
                            return
                        }
                        accumulator.add(delta)
                        take(delta, pieces: pieces)
                    case .usage(let reported):
                        usage = reported
                    case .done:
                        done = true
                    }
                }
            }
        }

        /// What the watchdog and failover read, then the client's events: once bytes may have
        /// reached the client, `emitted` says so (and failover stops).
        func publish() {
            let (now, count, first, reported, id) = (clock.now, delivered, sawDelta, usage, accumulator.upstreamID)
            let emitting = emit != nil && !out.isEmpty
            progress.withLockedValue { state in
                state.lastActivity = now
                state.delivered = count
                if first && state.firstToken == nil { state.firstToken = now }
                if state.upstreamID == nil { state.upstreamID = id }
                if let reported { state.usage = reported }
                if emitting { state.emitted = true }
            }
            if let emit, !out.isEmpty {
                emit(ByteBuffer(bytes: out))
                out.removeAll(keepingCapacity: true)
            }
        }

        for try await buffer in response.body {
            // Bytes read before the watchdog stopped the call are not relayed after it.
            if abort.isAborted { throw UpstreamFailure(.disconnected, "The call was stopped") }
            progress.withLockedValue { $0.lastActivity = clock.now }
            do {
                try handle(try parser.feed(buffer))
            } catch {
                publish()  // what came before the failure in this read still reaches the client
                throw error
            }
            publish()
            if done {
                // What may follow is the body's terminator: the connection can serve again. (The
                // overshoot cut stops without this, which closes the connection and so cancels the call.)
                if !overshot { response.body.finishQuietly() }
                break
            }
        }
        if !done, let last = parser.finish() {
            try handle([last])
            publish()
        }
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
