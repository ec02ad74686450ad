import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore
import Tracing

extension ChatPipeline {
    // MARK: Run

    /// The outcome of a whole request across its attempts.
    enum RequestOutcome: Sendable {
        case success(AttemptResult, CostBreakdown)
        /// Every attempt failed (or the last one failed after output was delivered).
        case failure(APIError, deliveredBeforeFailure: Bool)
        /// The client went away.
        case cancelled
    }

    /// Runs the attempts in order. `emit`, when given, receives the client's SSE events as they
    /// arrive (a streaming client); once one has been emitted, the request can no longer fail over.
    /// `clientGone`, checked with each attempt's watchdog, ends the request as cancelled when it
    /// says the client left (cancelling the calling task does the same).
    @inline(never)  // a frame of its own (see ChatPipeline)
    func run(
        _ prepared: PreparedChat, emit: (@Sendable (ByteBuffer) -> Void)?, clientGone: (@Sendable () -> Bool)? = nil
    ) async -> RequestOutcome {
        let heartbeat = idempotencyHeartbeat(prepared)
        defer { heartbeat?.cancel() }
        return await runAttempts(prepared, emit: emit, clientGone: clientGone)
    }

    /// Keeps a running request's `Idempotency-Key` claim fresh, so a request that runs longer
    /// than the stale window is not taken over by a retry on another node.
    func idempotencyHeartbeat(_ prepared: PreparedChat) -> Task<Void, Never>? {
        guard let key = prepared.idempotencyKey else { return nil }
        let (ledger, logger, interval) = (self.ledger, self.logger, configuration.holdTTL / 3)
        let (account, generationID) = (prepared.key.accountID, prepared.generationID)
        return Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                guard !Task.isCancelled else { return }
                do {
                    if try await !ledger.renewIdempotencyClaim(account: account, key: key, generationID: generationID) {
                        logger.warning(
                            "a retry took over this request's Idempotency-Key; its charge will be refused",
                            metadata: ["generation": "\(generationID)"])
                        return
                    }
                } catch {
                    logger.warning(
                        "could not renew an Idempotency-Key claim", metadata: ["generation": "\(generationID)", "error": "\(error)"])
                }
            }
        }
    }

    /// What a request's attempts left so far: the record of each, the failures, and the
    /// insurance transfers for what failed attempts cost the operator.
    struct AttemptHistory {
        var records: [AttemptRecord] = []
        var failures: [UpstreamFailure] = []
        var insurance: [TransferRequest] = []
    }

    /// Tries the planned attempts in order. The loop keeps little across the attempt that is
    /// running (its frame lives as long as the stream does); what happens after an attempt runs
    /// in `conclude`, whose frame exists only once the attempt's are gone.
    @inline(never)  // a frame of its own (see ChatPipeline)
    func runAttempts(
        _ prepared: PreparedChat, emit: (@Sendable (ByteBuffer) -> Void)?, clientGone: (@Sendable () -> Bool)?
    ) async -> RequestOutcome {
        var history = AttemptHistory()
        var queue = FailoverQueue(prepared.attempts)
        while let attempt = queue.next() {
            let started = clock.now
            var initial = AttemptProgress(lastActivity: started)
            let span = prepared.trace.map { trace in
                let (span, propagation) = startAttemptSpan(attempt, prepared: prepared, trace: trace)
                initial.propagation = propagation
                return span
            }
            let progress = NIOLockedValueBox(initial)
            let result: Result<AttemptResult, any Error>
            do {
                result = .success(
                    try await runAttempt(attempt, prepared: prepared, progress: progress, emit: emit, clientGone: clientGone))
            } catch {
                result = .failure(error)
            }
            if let span, let trace = prepared.trace {
                endAttemptSpan(
                    span, result: result, started: started, progress: progress.withLockedValue { $0 }, prepared: prepared, trace: trace)
            }
            if let outcome = await conclude(
                result, of: attempt, started: started, progress: progress, prepared: prepared, history: &history, queue: &queue)
            {
                return outcome
            }
        }
        let error = Self.finalError(history.failures, last: prepared.attempts.last!, records: history.records)
        await settleFailure(
            prepared, attempt: prepared.attempts.last!, records: history.records,
            progress: AttemptProgress(lastActivity: clock.now), delivered: false, insurance: history.insurance,
            status: error.statusCode)
        return .failure(error, deliveredBeforeFailure: false)
    }

    /// Records how an attempt ended and settles the request when it is over: the outcome, or nil
    /// to fail over to the next attempt.
    @inline(never)  // a frame of its own (see ChatPipeline)
    func conclude(
        _ result: Result<AttemptResult, any Error>, of attempt: PlannedAttempt, started: ContinuousClock.Instant,
        progress: NIOLockedValueBox<AttemptProgress>, prepared: PreparedChat, history: inout AttemptHistory,
        queue: inout FailoverQueue
    ) async -> RequestOutcome? {
        let latency = Int((clock.now - started) / .milliseconds(1))
        let failure: UpstreamFailure
        switch result {
        case .success(let success):
            metrics.attempt(provider: attempt.endpoint.tag, outcome: "ok")
            let firstToken = success.firstTokenAt.map { $0 - started }
            if let firstToken { metrics.firstToken(provider: attempt.endpoint.tag, after: firstToken) }
            let streaming = success.firstTokenAt.map { clock.now - $0 }
            let seconds = streaming.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
            let tokens = success.usage?.completionTokens ?? success.delivered
            health.recordSuccess(
                attempt, firstTokenMillis: firstToken.map { Int($0 / .milliseconds(1)) },
                tokensPerSecond: seconds.flatMap { $0 > 0.001 ? Double(tokens) / $0 : nil })
            history.records.append(
                AttemptRecord(
                    provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                    model: attempt.model.id, status: "200", latencyMs: latency))
            let cost = await settleSuccess(prepared, result: success, records: history.records, insurance: history.insurance)
            return .success(success, cost)
        case .failure(let error as UpstreamFailure) where !Task.isCancelled:
            // (A failure racing the client's departure is the departure: charged as cancelled.)
            failure = error
        case .failure(let error):
            guard !(error is CancellationError) && !Task.isCancelled else {
                await settleCancelled(
                    prepared, attempt: attempt, progress: progress.withLockedValue { $0 }, records: history.records,
                    insurance: history.insurance)
                return .cancelled
            }
            failure = Self.classify(error)
        }
        metrics.attempt(provider: attempt.endpoint.tag, outcome: failure.code)
        // Only the provider's failures count against it; a 400 is the request's own.
        if failure.isRetryable { health.recordFailure(attempt, rateLimited: failure.isRateLimit) }
        // What the provider will bill us for this failed attempt (tokens it generated) is
        // the operator's insurance expense, never the client's.
        let spentOn = progress.withLockedValue { $0 }
        let spent = Charging.insurance(
            reported: spentOn.usage, deliveredPieces: spentOn.delivered,
            promptEstimate: prepared.request.promptTokenEstimate, pricing: attempt.endpoint.pricing)
        if spent > .zero {
            history.insurance.append(
                TransferRequest(
                    idempotencyKey: "insurance:\(prepared.generationID):\(history.records.count)",
                    debit: Billing.SystemAccount.insurance,
                    credit: Billing.SystemAccount.provider(attempt.provider.slug), amount: spent, kind: .insurance,
                    keyID: prepared.key.id, generationID: prepared.generationID,
                    memo: "failed attempt: \(attempt.model.id) via \(attempt.endpoint.tag)"))
        }
        history.records.append(
            AttemptRecord(
                provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                model: attempt.model.id, status: failure.code, latencyMs: latency,
                error: failure.message, providerCost: spent))
        history.failures.append(failure)
        logger.info(
            "upstream attempt failed",
            metadata: [
                "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)",
                "error": "\(failure)",
            ])
        if let detail = failure.operatorDetail {
            logger.debug(
                "upstream error body",
                metadata: ["generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)", "body": "\(detail)"])
        }
        let delivered = spentOn.emitted
        let verdict = queue.after(
            .init(
                retryable: failure.isRetryable, contextTooLong: failure.isContextLengthError,
                deliveredToClient: delivered), of: attempt)
        if verdict == .stop {
            let error = Self.finalError(history.failures, last: attempt, records: history.records)
            await settleFailure(
                prepared, attempt: attempt, records: history.records, progress: spentOn, delivered: delivered,
                insurance: history.insurance, status: error.statusCode)
            return .failure(error, deliveredBeforeFailure: delivered)
        }
        metrics.failover()
        return nil
    }

    /// 429 when every attempt was rate-limited, the upstream's own status for a client error it
    /// returned, otherwise 502; with the provider, its raw error and every attempt.
    static func finalError(_ failures: [UpstreamFailure], last: PlannedAttempt, records: [AttemptRecord]) -> APIError {
        let lastFailure = failures.last
        var status = lastFailure?.clientStatus ?? 502
        if !failures.isEmpty && failures.allSatisfy(\.isRateLimit) { status = 429 } else if status == 429 { status = 502 }
        var metadata: JSONObject = ["provider_name": .string(last.provider.name)]
        if let raw = lastFailure?.raw { metadata["raw"] = .string(raw) }
        if let code = lastFailure?.code { metadata["provider_code"] = .string(code) }
        metadata["previous_errors"] = .array(
            records.map { record in
                [
                    "provider": .string(record.provider), "provider_name": .string(record.providerName),
                    "model": .string(record.model), "status": .string(record.status),
                    "message": record.error.map { .string($0) } ?? nil, "latency": .int(Int64(record.latencyMs)),
                ]
            })
        var headers: [(String, String)] = []
        if status == 429, let after = failures.compactMap(\.retryAfter).min() {
            headers.append(("Retry-After", String(after)))
            metadata["retry_after_seconds"] = .int(Int64(after))
        }
        let message =
            status == 502 && failures.count > 1
            ? "All \(failures.count) provider attempts failed. Last: \(lastFailure?.message ?? "unknown error")"
            : (lastFailure.map { "Provider returned error: \($0.message)" } ?? "Provider returned error")
        return APIError(status: status, message: message, metadata: metadata, headers: headers)
    }

    static func classify(_ error: any Error) -> UpstreamFailure {
        if let failure = error as? UpstreamFailure { return failure }  // the transport's own classification
        if error is ChannelError { return UpstreamFailure(.disconnected, "The provider connection failed: \(error)") }
        if error is UpstreamBodyTooLarge { return UpstreamFailure(.malformed, "The provider's error body is too large") }
        if error is SSEError { return UpstreamFailure(.malformed, "The provider's stream is not valid SSE") }
        return UpstreamFailure(.disconnected, "Upstream failure: \(error)")
    }
}
