import AsyncHTTPClient
import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

/// A request that passed validation, routing and the credit check, with its hold placed.
struct PreparedChat: Sendable {
    var request: ChatRequest
    var key: KeyRecord
    var attempts: [PlannedAttempt]
    var generationID: String
    var created: Int64
    /// Credit reserved (from the node's lease) for the worst case, nil for free requests.
    var reservation: CreditReservation?
    /// Reserved against the key's spending limit (zero without a limit).
    var keyReservation = Money.zero
    var startedAt: ContinuousClock.Instant
    var startedDate: Date
    /// The client's `Idempotency-Key`, claimed for this request.
    var idempotencyKey: String?
}

/// How an upstream attempt ended.
struct AttemptResult: Sendable {
    var attempt: PlannedAttempt
    var usage: TokenUsage?
    var accumulator: CompletionAccumulator
    /// Output pieces delivered to the client (or collected, when not streaming).
    var delivered: Int
    var finishReason: String?
    var firstTokenAt: ContinuousClock.Instant?
}

/// Shared between an attempt and its watchdog.
struct AttemptProgress: Sendable {
    var lastActivity: ContinuousClock.Instant
    var firstToken: ContinuousClock.Instant?
    var delivered = 0
    var upstreamID: String?
    var usage: TokenUsage?
}

/// The request path after authentication: plan → hold → attempt (with failover) → settle.
///
/// Streams are written to an `emit` callback as the upstream produces them; non-streamed
/// requests are assembled from the same upstream stream. Every path ends with the hold posted
/// or voided: zero completion insurance means only a successful run is charged.
struct ChatPipeline: Sendable {
    let catalog: Catalog
    let planner: RoutingPlanner
    let ledger: any LedgerStore
    let credit: CreditLeases
    let transport: any UpstreamTransport
    let configuration: GatewayConfiguration
    /// Provider slug → API key to send upstream.
    let providerKeys: [String: String]
    let logger: Logger
    let metrics: GatewayMetrics
    let health: HealthTracker
    let cluster: ClusterNode?
    let keyLimits = KeyLimits()
    let freeTier = FreeTierAdmission()
    let clock = ContinuousClock()
    /// Watchdogs and client-gone checks for every running request, on one timer; the interval
    /// is how late a timeout or a departed client may be noticed.
    let watch = PollingWatch(every: .milliseconds(50))

    // MARK: Prepare

    func prepare(_ request: ChatRequest, key: KeyRecord, generationID: String = makeGenerationID(),
                 idempotencyKey: String? = nil) async throws -> PreparedChat {
        var planned = try planner.plan(request, health: health.snapshot(), now: health.now)
        if let cluster, cluster.tableIsSet(for: configuration.region) {
            let table = cluster.table(for: configuration.region)
            let allowed = table.apply(to: planned, explicitOrder: !(request.provider.order ?? []).isEmpty)
            guard !allowed.isEmpty else {
                throw APIError(status: 404, message: "No endpoint for \(request.requestedModel) is allowed in region "
                    + "\(configuration.region) by its routing table",
                    metadata: ["region": .string(configuration.region), "allowed": .array(table.allowed.map { .string($0) })])
            }
            planned = allowed
        }
        // Data residency: a pinned key's requests use only its region's endpoints.
        if let region = key.pinnedRegion {
            planned = planned.filter { catalog.region(of: $0.endpoint) == region }
            guard !planned.isEmpty else {
                throw APIError(status: 404, message: "No endpoint for \(request.requestedModel) is in region \(region), "
                    + "where this key's requests must be served", metadata: ["region": .string(region)])
            }
        }
        // An endpoint whose provider has no credentials on this node cannot be attempted.
        let attempts = planned.filter { providerKeys[$0.provider.slug] != nil }
        guard !attempts.isEmpty else {
            let providers = Array(Set(planned.map(\.provider.name))).sorted().joined(separator: ", ")
            throw APIError(status: 503, message: "No provider endpoint can be attempted for \(request.requestedModel): "
                + "no API key is configured on this node for \(providers)",
                metadata: ["providers": .array(Array(Set(planned.map(\.provider.slug))).sorted().map { .string($0) })])
        }
        try await checkFreeTier(request, key: key)
        let keyRemaining = try await keyLimitRemaining(key)
        var prepared = PreparedChat(
            request: request, key: key, attempts: attempts, generationID: generationID,
            created: Int64(Date().timeIntervalSince1970), reservation: nil, startedAt: clock.now, startedDate: Date(),
            idempotencyKey: idempotencyKey)

        let worstCase = attempts.map { $0.worstCaseCost(for: request) }
        let largest = worstCase.max() ?? .zero
        guard largest > .zero else {
            // Free requests hold nothing, but an account with no balance is refused all the same.
            let (ledger, account) = (self.ledger, key.accountID)
            let balance = try await ledgerCall { try await ledger.balance(account: account) }
            guard balance.balance > .zero else { throw Self.noBalance(balance.balance) }
            return prepared
        }
        if credit.committer.reachability.isBacklogged {
            throw APIError(status: 503, message: "This node's charges have waited too long for the credit ledger, so it takes "
                + "no paid requests until they are recorded. Retry shortly or on another node.",
                metadata: ["reason": "settlement_backlog", "error_type": "ledger_unavailable"])
        }
        var covered = largest
        if keyRemaining != nil {
            // The key reserves what the dearest attempt may cost, so failover never charges the
            // key more than it reserved; when that is more than the key has left, keep the
            // attempts the first one's worst case covers.
            if keyLimits.reserve(key, amount: largest) != nil {
                if let left = keyLimits.reserve(key, amount: worstCase[0]) {
                    throw Self.cannotAfford(attempts[0], request: request, available: left, limitSource: "key")
                }
                covered = worstCase[0]
            }
            prepared.keyReservation = covered
        }
        let kept = zip(attempts, worstCase).filter { $0.1 <= covered }
        prepared.attempts = kept.map(\.0)
        do {
            let keptCosts = kept.map(\.1)
            prepared.reservation = try await reserveCredit(&prepared, worstCase: keptCosts, largest: keptCosts.max() ?? covered)
            return prepared
        } catch {
            release(prepared)  // the key's reservation, when the account's could not be made
            throw error
        }
    }

    /// One reservation covers every planned attempt, so failover never needs a second one. When
    /// that is more than the account has, keep the attempts the first one's covers.
    private func reserveCredit(_ prepared: inout PreparedChat, worstCase: [Money], largest: Money) async throws -> CreditReservation {
        let (credit, account, request) = (self.credit, prepared.key.accountID, prepared.request)
        var outcome = try await ledgerCall(local: true) { try await credit.reserve(account: account, amount: largest) }
        if case .insufficient(let available) = outcome, worstCase[0] < largest {
            guard available > .zero else { throw Self.noBalance(available) }
            prepared.attempts = zip(prepared.attempts, worstCase).filter { $0.1 <= worstCase[0] }.map(\.0)
            outcome = try await ledgerCall(local: true) { try await credit.reserve(account: account, amount: worstCase[0]) }
        }
        switch outcome {
        case .reserved(let reservation):
            return reservation
        case .insufficient(let available):
            guard available > .zero else { throw Self.noBalance(available) }
            throw Self.cannotAfford(prepared.attempts[0], request: request, available: available)
        }
    }

    /// Gives back everything a request reserved that will never run (its client left before it
    /// started). Its `Idempotency-Key` claim, if any, goes stale after the hold TTL.
    func abandon(_ prepared: PreparedChat) async {
        if let reservation = prepared.reservation { await credit.cancel(reservation) }
        release(prepared)
    }

    /// Gives back what a request reserved against its key that will not be settled.
    func release(_ prepared: PreparedChat) {
        if prepared.keyReservation > .zero {
            keyLimits.release(prepared.key.id, reserved: prepared.keyReservation, charged: .zero)
        }
    }

    /// Runs a ledger call for the request path. When the ledger cannot be reached the request is
    /// refused with a 503: the node cannot prove the account can pay.
    /// `local`: the call may be answered without the ledger (a reservation from the node's
    /// lease), so it is tried even during a known outage.
    func ledgerCall<T: Sendable>(local: Bool = false, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let committer = credit.committer
        guard local || committer.reachability.isReachable else {
            throw Self.ledgerUnavailable(LedgerError.unreachable("outage in progress"))
        }
        do {
            // A reservation keeps its own deadline for the ledger: abandoning one midway could
            // leave credit reserved in the lease with nobody to release it.
            if local { return try await body() }
            return try await withLedgerDeadline(.seconds(2), "a ledger read", operation: body)
        } catch let error as LedgerError where error.isRefusal {
            throw error
        } catch let error as APIError {
            throw error
        } catch {
            logger.warning("ledger call failed", metadata: ["error": "\(String(reflecting: error))"])
            if !local { await committer.noticeOutage() }
            throw Self.ledgerUnavailable(error)
        }
    }

    static func ledgerUnavailable(_ error: any Error) -> APIError {
        APIError(status: 503, message: "The credit ledger cannot be reached, so this node cannot confirm the account can pay "
                 + "for this request. Retry shortly.", metadata: ["reason": "ledger_unavailable"])
    }

    static func noBalance(_ balance: Money) -> APIError {
        APIError(status: 402, message: "Insufficient credits. Add more credits to this account and retry.",
                 metadata: ["available": .decimal(balance.decimalString)])
    }

    /// What the key may still spend in its current limit window, nil without a limit; 402 when
    /// nothing is left.
    func keyLimitRemaining(_ key: KeyRecord) async throws -> Money? {
        guard let limit = key.limit else { return nil }
        if keyLimits.beginRefresh(key.id, now: Date(), spoolReplayed: !credit.committer.hasBacklog) {
            let (ledger, keyID) = (self.ledger, key.id)
            do {
                let usage = try await ledgerCall { try await ledger.keyUsage(keyID: keyID, now: Date()) }
                keyLimits.refreshed(key.id, usage: usage, at: Date())
            } catch {
                keyLimits.refreshFailed(key.id)
                // Without any read, the node cannot know what the key spent.
                if !keyLimits.hasUsage(key.id) { throw error }
            }
        }
        let remaining = keyLimits.remaining(key) ?? limit
        guard remaining > .zero else {
            let spent = limit - remaining
            throw APIError(status: 402, message: "Key limit exceeded: this key may spend \(limit)"
                + (key.limitReset.map { " per \($0 == "daily" ? "day" : $0 == "weekly" ? "week" : "month")" } ?? "")
                + " and has spent \(spent).",
                metadata: ["limit_source": "key", "limit": .decimal(limit.decimalString), "usage": .decimal(spent.decimalString)])
        }
        return remaining
    }

    /// `:free` models: 20 requests a minute, and 50 a day (1,000 once the account has bought $10
    /// of credit). Counted as requests are admitted, so concurrent requests on one node never
    /// exceed the limit; a node seeds an account's counts from the ledger's generation records the
    /// first time it sees the account (a restart resumes them), and in a cluster adds the counts
    /// the other nodes gossip (Docs/ledger.md gives the cross-node bound).
    func checkFreeTier(_ request: ChatRequest, key: KeyRecord) async throws {
        guard request.requestedModel.hasSuffix(":free") else { return }
        let now = Date()
        let day = UsageWindows(now: now).day
        let (ledger, account) = (self.ledger, key.accountID)
        let daily = FreeTier.dailyLimit(purchased: try await ledgerCall { try await ledger.purchasedTotal(account: account) })
        let minuteStart = Date(timeIntervalSince1970: (now.timeIntervalSince1970 / 60).rounded(.down) * 60)
        let refusal: (limit: Int, used: Int, perMinute: Bool)?
        if let cluster {
            // Cluster-wide counters gossiped between nodes: no ledger query, a bounded overshoot.
            refusal = await cluster.admitFree(account: account, dailyLimit: daily, now: now.timeIntervalSince1970)
        } else {
            if !freeTier.isSeeded(account) {
                let counts = try await ledgerCall { try await ledger.freeRequestCount(account: account, since: [minuteStart, day]) }
                freeTier.seed(account, minute: counts[0], day: counts[1], now: now.timeIntervalSince1970)
            }
            refusal = freeTier.admit(account: account, dailyLimit: daily, now: now.timeIntervalSince1970)
        }
        guard let refusal else { return }
        let limit = refusal.limit
        let reset = refusal.perMinute ? minuteStart.addingTimeInterval(60) : day.addingTimeInterval(86_400)
        let resetMillis = Int64(reset.timeIntervalSince1970 * 1000)
        throw APIError(
            status: 429,
            message: limit == FreeTier.requestsPerMinute
                ? "Rate limit exceeded: free models allow \(limit) requests per minute."
                : "Rate limit exceeded: free-models-per-day. \(limit) requests a day"
                    + (limit == FreeTier.smallDailyLimit ? "; buying $10 of credit raises it to \(FreeTier.largeDailyLimit)." : "."),
            metadata: ["limit": .int(Int64(limit)), "reset": .int(resetMillis)],
            headers: [("X-RateLimit-Limit", String(limit)), ("X-RateLimit-Remaining", "0"),
                      ("X-RateLimit-Reset", String(resetMillis)),
                      ("Retry-After", String(max(1, Int(reset.timeIntervalSince(now).rounded(.up)))))])
    }

    static func cannotAfford(_ attempt: PlannedAttempt, request: ChatRequest, available: Money,
                             limitSource: String = "credits") -> APIError {
        let pricing = attempt.endpoint.pricing
        let promptPrice = max(pricing.prompt.attos, pricing.inputCacheWrite.attos)
        let promptCost = promptPrice * Int128(attempt.promptTokenBound(for: request)) + pricing.request.attos
        let left = Int128(available.nanos) * 1_000_000_000 - promptCost
        let perToken = pricing.completion.attos * Int128(request.choices)
        let affordable = perToken == 0 ? 0 : max(0, Int(clamping: left / perToken))
        let requested = attempt.completionLimit(for: request)
        return APIError(
            status: 402,
            message: "This request requires more credits, or fewer max_tokens. You requested up to \(requested) tokens, "
                + "but can only afford \(affordable). Add credits or lower max_tokens.",
            metadata: ["requested_tokens": .int(Int64(requested)), "affordable_tokens": .int(Int64(affordable)),
                       "available": .decimal(available.decimalString), "limit_source": .string(limitSource)])
    }

    static func makeGenerationID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        var generator = SystemRandomNumberGenerator()
        let suffix = String((0..<20).map { _ in alphabet.randomElement(using: &generator)! })
        return "gen-\(Int(Date().timeIntervalSince1970))-\(suffix)"
    }

    // MARK: Run

    /// The outcome of a whole request across its attempts.
    enum Outcome: Sendable {
        case success(AttemptResult, CostBreakdown)
        /// Every attempt failed (or the last one failed after output was delivered).
        case failure(APIError, deliveredBeforeFailure: Bool)
        /// The client went away.
        case cancelled
    }

    /// Runs the attempts in order. `emit`, when given, receives each delta as it arrives (a
    /// streaming client); once one has been emitted, the request can no longer fail over.
    func run(_ prepared: PreparedChat, emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?) async -> Outcome {
        let heartbeat = idempotencyHeartbeat(prepared)
        defer { heartbeat?.cancel() }
        return await runAttempts(prepared, emit: emit)
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
                        logger.warning("a retry took over this request's Idempotency-Key; its charge will be refused",
                                       metadata: ["generation": "\(generationID)"])
                        return
                    }
                } catch {
                    logger.warning("could not renew an Idempotency-Key claim", metadata: ["generation": "\(generationID)", "error": "\(error)"])
                }
            }
        }
    }

    func runAttempts(_ prepared: PreparedChat, emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?) async -> Outcome {
        var records: [AttemptRecord] = []
        var failures: [UpstreamFailure] = []
        var insurance: [TransferRequest] = []
        var queue = prepared.attempts[...]
        while let attempt = queue.popFirst() {
            let started = clock.now
            let progress = NIOLockedValueBox(AttemptProgress(lastActivity: started))
            let result: Result<AttemptResult, UpstreamFailure>
            do {
                result = .success(try await runAttempt(attempt, prepared: prepared, progress: progress, emit: emit))
            } catch let failure as UpstreamFailure {
                result = .failure(failure)
            } catch is CancellationError {
                await settleCancelled(prepared, attempt: attempt, progress: progress.withLockedValue { $0 }, records: records,
                                      insurance: insurance)
                return .cancelled
            } catch {
                if Task.isCancelled {
                    await settleCancelled(prepared, attempt: attempt, progress: progress.withLockedValue { $0 }, records: records,
                                          insurance: insurance)
                    return .cancelled
                }
                result = .failure(Self.classify(error))
            }
            let latency = Int((clock.now - started) / .milliseconds(1))
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
                records.append(AttemptRecord(provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                                             model: attempt.model.id, status: "200", latencyMs: latency))
                let cost = await settleSuccess(prepared, result: success, records: records, insurance: insurance)
                return .success(success, cost)
            case .failure(let failure):
                metrics.attempt(provider: attempt.endpoint.tag, outcome: failure.code)
                // Only the provider's failures count against it; a 400 is the request's own.
                if failure.isRetryable { health.recordFailure(attempt, rateLimited: failure.isRateLimit) }
                // What the provider will bill us for this failed attempt (tokens it generated) is
                // the operator's insurance expense, never the client's.
                // Capped like overage: an absurd usage report must not make the settlement unrecordable.
                let spent = min(Self.generatedCost(progress.withLockedValue { $0 }, attempt: attempt, prepared: prepared), .maximumAmount)
                if spent > .zero {
                    insurance.append(TransferRequest(
                        idempotencyKey: "insurance:\(prepared.generationID):\(records.count)", debit: Billing.SystemAccount.insurance,
                        credit: Billing.SystemAccount.provider(attempt.provider.slug), amount: spent, kind: .insurance,
                        keyID: prepared.key.id, generationID: prepared.generationID,
                        memo: "failed attempt: \(attempt.model.id) via \(attempt.endpoint.tag)"))
                }
                records.append(AttemptRecord(provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                                             model: attempt.model.id, status: failure.code, latencyMs: latency,
                                             error: failure.message, providerCost: spent))
                failures.append(failure)
                if failure.isContextLengthError {
                    // Only a model with a larger context can take this prompt.
                    queue = queue.filter { $0.endpoint.contextLength > attempt.endpoint.contextLength }[...]
                }
                logger.info("upstream attempt failed", metadata: [
                    "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)",
                    "error": "\(failure)",
                ])
                let delivered = progress.withLockedValue { $0.delivered } > 0 && emit != nil
                let retryable = failure.isRetryable || (failure.isContextLengthError && !queue.isEmpty)
                if delivered || !retryable || queue.isEmpty {
                    let error = Self.finalError(failures, last: attempt, records: records)
                    await settleFailure(prepared, attempt: attempt, records: records,
                                        progress: progress.withLockedValue { $0 }, delivered: delivered, insurance: insurance)
                    return .failure(error, deliveredBeforeFailure: delivered)
                }
                metrics.failover()
            }
        }
        let error = Self.finalError(failures, last: prepared.attempts.last!, records: records)
        await settleFailure(prepared, attempt: prepared.attempts.last!, records: records,
                            progress: AttemptProgress(lastActivity: clock.now), delivered: false, insurance: insurance)
        return .failure(error, deliveredBeforeFailure: false)
    }

    /// The cost of the tokens an attempt made the provider generate: its reported usage, or an
    /// estimate from the pieces that arrived (one token each, half the prompt-size bound).
    static func generatedCost(_ progress: AttemptProgress, attempt: PlannedAttempt, prepared: PreparedChat) -> Money {
        if let usage = progress.usage { return CostBreakdown(usage: usage, pricing: attempt.endpoint.pricing).total }
        guard progress.delivered > 0 else { return .zero }
        let usage = TokenUsage(promptTokens: prepared.request.promptTokenEstimate / 2, completionTokens: progress.delivered)
        return CostBreakdown(usage: usage, pricing: attempt.endpoint.pricing).total
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
        metadata["previous_errors"] = .array(records.map { record in
            ["provider": .string(record.provider), "provider_name": .string(record.providerName),
             "model": .string(record.model), "status": .string(record.status),
             "message": record.error.map { .string($0) } ?? nil, "latency": .int(Int64(record.latencyMs))]
        })
        var headers: [(String, String)] = []
        if status == 429, let after = failures.compactMap(\.retryAfter).min() {
            headers.append(("Retry-After", String(after)))
            metadata["retry_after_seconds"] = .int(Int64(after))
        }
        let message = status == 502 && failures.count > 1
            ? "All \(failures.count) provider attempts failed. Last: \(lastFailure?.message ?? "unknown error")"
            : (lastFailure.map { "Provider returned error: \($0.message)" } ?? "Provider returned error")
        return APIError(status: status, message: message, metadata: metadata, headers: headers)
    }

    static func classify(_ error: any Error) -> UpstreamFailure {
        if let failure = error as? UpstreamFailure { return failure }
        if let client = error as? HTTPClientError {
            switch client {
            case .connectTimeout, .socksHandshakeTimeout, .tlsHandshakeTimeout:
                return UpstreamFailure(.connect, "Could not connect to the provider in time")
            case .remoteConnectionClosed, .readTimeout, .cancelled:
                return UpstreamFailure(.disconnected, "The provider closed the connection")
            default:
                return UpstreamFailure(.connect, "Could not reach the provider: \(client)")
            }
        }
        if error is ChannelError { return UpstreamFailure(.disconnected, "The provider connection failed: \(error)") }
        if error is UpstreamBodyTooLarge { return UpstreamFailure(.malformed, "The provider's error body is too large") }
        if error is SSEError { return UpstreamFailure(.malformed, "The provider's stream is not valid SSE") }
        return UpstreamFailure(.disconnected, "Upstream failure: \(error)")
    }

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
        switch attempt.provider.format {
        case .openai: try await callUpstream(OpenAIAdapter(), attempt, prepared: prepared, progress: progress, emit: emit)
        case .anthropic: try await callUpstream(AnthropicAdapter(), attempt, prepared: prepared, progress: progress, emit: emit)
        case .gemini: try await callUpstream(GeminiAdapter(), attempt, prepared: prepared, progress: progress, emit: emit)
        }
    }

    func callUpstream<Adapter: ProviderAdapter>(
        _ adapter: Adapter, _ attempt: PlannedAttempt, prepared: PreparedChat, progress: NIOLockedValueBox<AttemptProgress>,
        emit: (@Sendable (CompletionDelta, PlannedAttempt) -> Void)?
    ) async throws -> AttemptResult {
        let request = adapter.makeRequest(prepared.request, attempt: attempt, apiKey: providerKeys[attempt.provider.slug])
        let response: UpstreamResponse
        do {
            response = try await transport.send(request)
        } catch let error as HTTPClientError where error == .remoteConnectionClosed {
            throw UpstreamFailure(.disconnected, "The provider closed the connection without answering")
        } catch where !(error is CancellationError) && !Task.isCancelled {
            throw UpstreamFailure(.connect, "Could not connect to the provider: \(error)")
        }
        progress.withLockedValue { $0.lastActivity = clock.now }
        guard (200..<300).contains(response.status) else {
            let body = try await response.body.collect(upTo: 64 * 1024)
            throw adapter.failure(status: response.status, body: body,
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
            if done { break }
        }
        if !done, let last = parser.finish() { try handle([last]) }
        if overshot {
            logger.warning("the provider went past max_tokens; relaying stopped at the reserved bound", metadata: [
                "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)", "bound": "\(completionBound)"])
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

    // MARK: Settle

    private func generationRecord(
        _ prepared: PreparedChat, attempt: PlannedAttempt?, usage: TokenUsage, cost: Money, finishReason: String?,
        nativeFinishReason: String?, upstreamID: String?, cancelled: Bool, firstToken: ContinuousClock.Instant?,
        records: [AttemptRecord]
    ) -> GenerationRecord {
        let now = clock.now
        let latency = Int(((firstToken ?? now) - prepared.startedAt) / .milliseconds(1))
        let generation = Int((now - (firstToken ?? now)) / .milliseconds(1))
        return GenerationRecord(
            id: prepared.generationID, accountID: prepared.key.accountID, keyID: prepared.key.id,
            model: attempt?.model.id ?? prepared.request.requestedModel, providerName: attempt?.provider.name,
            providerTag: attempt?.endpoint.tag, upstreamID: upstreamID, streamed: prepared.request.stream,
            cancelled: cancelled, finishReason: finishReason, nativeFinishReason: nativeFinishReason, usage: usage,
            cost: cost, latencyMs: latency, generationTimeMs: generation, attempts: records, createdAt: prepared.startedDate)
    }

    /// The request's charge, at most what was reserved for it: an upstream that reports more
    /// than the reservation covers (its tokenizer disagrees, it overshot `max_tokens`) is paid in
    /// full, and the part beyond the reservation is the operator's overage, never the client's.
    private func chargeTransfers(_ prepared: PreparedChat, attempt: PlannedAttempt, cost: Money) -> [TransferRequest] {
        guard cost > .zero else { return [] }
        let reserved = prepared.reservation?.amount ?? .zero
        let charge = min(cost, reserved)
        let memo = "\(attempt.model.id) via \(attempt.endpoint.tag)"
        let provider = Billing.SystemAccount.provider(attempt.provider.slug)
        var transfers: [TransferRequest] = []
        if charge > .zero {
            transfers.append(TransferRequest(
                idempotencyKey: "charge:" + prepared.generationID, debit: prepared.key.accountID, credit: provider,
                amount: charge, kind: .charge, keyID: prepared.key.id, generationID: prepared.generationID, memo: memo))
        }
        if cost > charge {
            // Above `Money.maximumAmount` the upstream's report is absurd; the entry is capped and
            // the log says so.
            let overage = min(cost - charge, .maximumAmount)
            if overage < cost - charge {
                logger.error("upstream usage implies a cost beyond the ledger's largest entry", metadata: [
                    "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)", "cost": "\(cost)"])
            }
            metrics.overage(provider: attempt.provider.slug, amount: overage)
            logger.warning("upstream charged more than the reservation; the excess is overage", metadata: [
                "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)",
                "reserved": "\(reserved)", "cost": "\(cost)"])
            transfers.append(TransferRequest(
                idempotencyKey: "overage:" + prepared.generationID, debit: Billing.SystemAccount.overage, credit: provider,
                amount: overage, kind: .overage, keyID: prepared.key.id, generationID: prepared.generationID,
                memo: "beyond the reservation: " + memo))
        }
        return transfers
    }

    /// Posts a request's charges (none for a failure) and insurance entries, stores its generation
    /// record and closes its hold and idempotency claim, in one ledger transaction. It runs outside
    /// the request's cancellation: a client that hangs up must not stop its own settlement.
    private func settle(_ prepared: PreparedChat, transfers: [TransferRequest], generation: GenerationRecord,
                        response: JSONValue? = nil) async {
        let (credit, logger) = (self.credit, self.logger)
        let idempotency: IdempotencyOutcome? = prepared.idempotencyKey.map { key in
            response.map { .completed(account: prepared.key.accountID, key: key, response: JSONWriter.string($0)) }
                ?? .released(account: prepared.key.accountID, key: key)
        }
        let charged = Self.charged(prepared, transfers)
        let keyLimited = prepared.key.limit != nil
        if prepared.keyReservation > .zero || (keyLimited && charged > .zero) {
            keyLimits.release(prepared.key.id, reserved: prepared.keyReservation, charged: charged)
        }
        let (keyLimits, keyID) = (self.keyLimits, prepared.key.id)
        await Task {
            let receipt = await credit.settle(prepared.reservation, charged: charged, transfers: transfers,
                                              generation: generation, idempotency: idempotency)
            switch receipt {
            case .committed: if keyLimited { keyLimits.committed(keyID, charged: charged) }
            case .spooled, .held: if keyLimited { keyLimits.spooled(keyID, charged: charged) }
            case .rejected: logger.critical("ledger settlement failed", metadata: ["generation": "\(generation.id)"])
            }
        }.value
    }

    /// The non-streamed `chat.completion` for a successful attempt (also what an idempotent
    /// retry gets back).
    static func completion(_ prepared: PreparedChat, result: AttemptResult, cost: CostBreakdown) -> JSONValue {
        [
            "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
            "model": .string(result.attempt.model.id), "object": "chat.completion", "created": .int(prepared.created),
            "system_fingerprint": result.accumulator.systemFingerprint.map { .string($0) } ?? nil,
            "choices": .array(result.accumulator.completedChoices()),
            "usage": usageJSON(result.usage ?? TokenUsage(), cost: cost),
        ]
    }

    static func usageJSON(_ usage: TokenUsage, cost: CostBreakdown) -> JSONValue {
        [
            "prompt_tokens": .int(Int64(usage.promptTokens)), "completion_tokens": .int(Int64(usage.completionTokens)),
            "total_tokens": .int(Int64(usage.totalTokens)),
            "prompt_tokens_details": [
                "cached_tokens": .int(Int64(usage.cachedTokens)), "cache_write_tokens": .int(Int64(usage.cacheWriteTokens)),
                "audio_tokens": 0,
            ],
            "completion_tokens_details": ["reasoning_tokens": .int(Int64(usage.reasoningTokens))],
            "cost": .number(cost.total), "is_byok": false,
            "cost_details": [
                "upstream_inference_cost": nil, "upstream_inference_prompt_cost": .number(cost.prompt),
                "upstream_inference_completions_cost": .number(cost.completion),
            ],
        ]
    }

    func settleSuccess(_ prepared: PreparedChat, result: AttemptResult, records: [AttemptRecord],
                       insurance: [TransferRequest]) async -> CostBreakdown {
        let usage = result.usage ?? TokenUsage(
            promptTokens: prepared.request.promptTokenEstimate / 2, completionTokens: result.delivered)
        // Zero completion insurance: an empty answer with no finish reason costs nothing.
        let insured = result.finishReason == nil && usage.completionTokens == 0
        let upstreamCost = insured ? CostBreakdown.zero : CostBreakdown(usage: usage, pricing: result.attempt.endpoint.pricing)
        let transfers = chargeTransfers(prepared, attempt: result.attempt, cost: upstreamCost.total)
        let cost = upstreamCost.charged(Self.charged(prepared, transfers))
        let native = result.accumulator.completedChoices().first?["native_finish_reason"]?.stringValue
        let record = generationRecord(
            prepared, attempt: result.attempt, usage: usage, cost: cost.total, finishReason: result.finishReason,
            nativeFinishReason: native, upstreamID: result.accumulator.upstreamID, cancelled: false,
            firstToken: result.firstTokenAt, records: Self.withProviderCost(records, transfers))
        let response = prepared.idempotencyKey == nil ? nil : Self.completion(prepared, result: result, cost: cost)
        await settle(prepared, transfers: transfers + insurance, generation: record, response: response)
        return cost
    }

    /// What the client pays of `transfers`: the debits of its account.
    static func charged(_ prepared: PreparedChat, _ transfers: [TransferRequest]) -> Money {
        transfers.filter { $0.debitAccount == prepared.key.accountID }.reduce(Money.zero) { $0 + $1.amount }
    }

    /// The last attempt's record with what the provider is owed for it (charge and overage), so
    /// a generation's attempts add up to its provider payables.
    static func withProviderCost(_ records: [AttemptRecord], _ transfers: [TransferRequest]) -> [AttemptRecord] {
        guard var last = records.last else { return records }
        last.providerCost = transfers.filter { $0.kind == .charge || $0.kind == .overage }.reduce(Money.zero) { $0 + $1.amount }
        return records.dropLast() + [last]
    }

    /// A failed request costs the client nothing; the generation record keeps the attempts.
    func settleFailure(_ prepared: PreparedChat, attempt: PlannedAttempt, records: [AttemptRecord],
                       progress: AttemptProgress, delivered: Bool, insurance: [TransferRequest]) async {
        let record = generationRecord(
            prepared, attempt: delivered ? attempt : nil, usage: progress.usage ?? TokenUsage(), cost: .zero,
            finishReason: "error", nativeFinishReason: "error", upstreamID: progress.upstreamID, cancelled: false,
            firstToken: progress.firstToken, records: records)
        await settle(prepared, transfers: insurance, generation: record)
    }

    /// The client hung up: the upstream call was cancelled, and the tokens generated until then
    /// are charged (the upstream's usage when it was reported, else one token per delivered piece).
    func settleCancelled(_ prepared: PreparedChat, attempt: PlannedAttempt, progress: AttemptProgress,
                         records: [AttemptRecord], insurance: [TransferRequest]) async {
        let usage = progress.usage ?? TokenUsage(
            promptTokens: progress.delivered > 0 ? prepared.request.promptTokenEstimate / 2 : 0,
            completionTokens: progress.delivered)
        let upstreamCost = progress.delivered == 0 && progress.usage == nil
            ? CostBreakdown.zero : CostBreakdown(usage: usage, pricing: attempt.endpoint.pricing)
        let transfers = chargeTransfers(prepared, attempt: attempt, cost: upstreamCost.total)
        var all = records
        all.append(AttemptRecord(provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                                 model: attempt.model.id, status: "cancelled", latencyMs: 0,
                                 error: "The client closed the connection"))
        let record = generationRecord(
            prepared, attempt: attempt, usage: usage, cost: Self.charged(prepared, transfers), finishReason: nil,
            nativeFinishReason: nil, upstreamID: progress.upstreamID, cancelled: true, firstToken: progress.firstToken,
            records: Self.withProviderCost(all, transfers))
        await settle(prepared, transfers: transfers + insurance, generation: record)
    }
}
