import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore
import Tracing

extension ChatPipeline {
    // MARK: Prepare

    /// Plans the request's attempts and reserves what they may cost: the request is admitted,
    /// or refused with the reason. Traced as the request's `plan` span.
    func prepare(
        _ request: ChatRequest, key: KeyRecord, generationID: String = makeGenerationID(),
        idempotencyKey: String? = nil, trace: RequestTrace? = nil
    ) async throws -> PreparedChat {
        guard let trace else {
            return try await admit(request, key: key, generationID: generationID, idempotencyKey: idempotencyKey, trace: nil)
        }
        let span = trace.child("plan")
        do {
            let prepared = try await admit(request, key: key, generationID: generationID, idempotencyKey: idempotencyKey, trace: trace)
            span.updateAttributes { attributes in
                attributes["signalbox.planned_attempts"] = prepared.attempts.count
                attributes["signalbox.planned_endpoints"] = prepared.attempts.map(\.endpoint.tag).joined(separator: ",")
                attributes["signalbox.reserved_usd"] = (prepared.reservation?.amount ?? .zero).decimalString
            }
            span.end()
            trace.admitted()
            return prepared
        } catch {
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
            span.end()
            throw error
        }
    }

    private func admit(
        _ request: ChatRequest, key: KeyRecord, generationID: String, idempotencyKey: String?, trace: RequestTrace?
    ) async throws -> PreparedChat {
        let region = configuration.region
        let scope = PlanningScope(
            routingTable: cluster.flatMap { $0.tableIsSet(for: region) ? (region, $0.table(for: region)) : nil },
            pinnedRegion: key.pinnedRegion, credentialedProviders: Set(providerKeys.keys))
        let attempts: [PlannedAttempt]
        do {
            attempts = try planner.plan(request, health: health.snapshot(), now: health.now, scope: scope)
        } catch {
            throw error.apiError
        }
        try await checkFreeTier(request, key: key)
        let keyRemaining = try await keyLimitRemaining(key)
        let (startedAt, startedDate) = (clock.now, Date())
        func admitted(_ attempts: [PlannedAttempt], reservation: CreditReservation?, keyReservation: Money) -> PreparedChat {
            PreparedChat(
                request: request, key: key, attempts: attempts, generationID: generationID,
                created: Int64(startedDate.timeIntervalSince1970), reservation: reservation, keyReservation: keyReservation,
                startedAt: startedAt, startedDate: startedDate, idempotencyKey: idempotencyKey, trace: trace)
        }

        let worstCase = attempts.map { $0.worstCaseCost(for: request) }
        let largest = worstCase.max() ?? .zero
        guard largest > .zero else {
            // Free requests hold nothing, but an account with no balance is refused all the same.
            let (ledger, account) = (self.ledger, key.accountID)
            let balance = try await ledgerCall { try await ledger.balance(account: account) }
            guard balance.balance > .zero else { throw Self.noBalance(balance.balance) }
            return admitted(attempts, reservation: nil, keyReservation: .zero)
        }
        if credit.committer.reachability.isBacklogged {
            throw APIError(
                status: 503,
                message: "This node's charges have waited too long for the credit ledger, so it takes "
                    + "no paid requests until they are recorded. Retry shortly or on another node.",
                metadata: ["reason": "settlement_backlog", "error_type": "ledger_unavailable"])
        }
        var covered = largest
        var keyReservation = Money.zero
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
            keyReservation = covered
        }
        let kept = zip(attempts, worstCase).filter { $0.1 <= covered }
        do {
            let keptCosts = kept.map(\.1)
            let (reservation, affordable) = try await reserveCredit(
                account: key.accountID, request: request, attempts: kept.map(\.0), worstCase: keptCosts,
                largest: keptCosts.max() ?? covered)
            return admitted(affordable, reservation: reservation, keyReservation: keyReservation)
        } catch {
            // The key's reservation, when the account's could not be made.
            cancelKeyReservation(key, reserved: keyReservation)
            throw error
        }
    }

    /// One reservation covers every planned attempt, so failover never needs a second one. When
    /// that is more than the account has, keep the attempts the first one's covers. Returns the
    /// reservation and the attempts it covers.
    func reserveCredit(
        account: String, request: ChatRequest, attempts: [PlannedAttempt], worstCase: [Money], largest: Money
    ) async throws -> (CreditReservation, [PlannedAttempt]) {
        let credit = self.credit
        var attempts = attempts
        var outcome = try await ledgerCall(local: true) { try await credit.reserve(account: account, amount: largest) }
        if case .insufficient(let available) = outcome, worstCase[0] < largest {
            guard available > .zero else { throw Self.noBalance(available) }
            attempts = zip(attempts, worstCase).filter { $0.1 <= worstCase[0] }.map(\.0)
            outcome = try await ledgerCall(local: true) { try await credit.reserve(account: account, amount: worstCase[0]) }
        }
        switch outcome {
        case .reserved(let reservation):
            return (reservation, attempts)
        case .insufficient(let available):
            guard available > .zero else { throw Self.noBalance(available) }
            throw Self.cannotAfford(attempts[0], request: request, available: available)
        }
    }

    /// Gives back everything a request reserved that will never run (its client left before it
    /// started). Its `Idempotency-Key` claim, if any, goes stale after the hold TTL.
    func cancel(_ prepared: PreparedChat) async {
        prepared.trace?.end(status: 499) { $0.attributes["signalbox.outcome"] = "cancelled" }
        if let reservation = prepared.reservation { await credit.cancel(reservation) }
        cancelKeyReservation(prepared)
    }

    /// Gives back what a request reserved against its key that will not be settled.
    func cancelKeyReservation(_ prepared: PreparedChat) {
        cancelKeyReservation(prepared.key, reserved: prepared.keyReservation)
    }

    func cancelKeyReservation(_ key: KeyRecord, reserved: Money) {
        if reserved > .zero { keyLimits.settle(key.id, reserved: reserved, charged: .zero) }
    }

    /// Runs a ledger call for the request path. When the ledger cannot be reached the request is
    /// refused with a 503: the node cannot prove the account can pay.
    /// `local`: the call may be answered without the ledger (a reservation from the node's
    /// lease), so it is tried even during a known outage.
    func ledgerCall<T: Sendable>(local: Bool = false, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let committer = credit.committer
        guard local || committer.reachability.isReachable else {
            throw APIError.ledgerUnavailable
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
            throw APIError.ledgerUnavailable
        }
    }

    static func noBalance(_ balance: Money) -> APIError {
        APIError(
            status: 402, message: "Insufficient credits. Add more credits to this account and retry.",
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
            throw APIError(
                status: 402,
                message: "Key limit exceeded: this key may spend \(limit)"
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
            headers: [
                ("X-RateLimit-Limit", String(limit)), ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", String(resetMillis)),
                ("Retry-After", String(max(1, Int(reset.timeIntervalSince(now).rounded(.up))))),
            ])
    }

    static func cannotAfford(
        _ attempt: PlannedAttempt, request: ChatRequest, available: Money,
        limitSource: String = "credits"
    ) -> APIError {
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
            metadata: [
                "requested_tokens": .int(Int64(requested)), "affordable_tokens": .int(Int64(affordable)),
                "available": .decimal(available.decimalString), "limit_source": .string(limitSource),
            ])
    }

    static func makeGenerationID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        var generator = SystemRandomNumberGenerator()
        let suffix = String((0..<20).map { _ in alphabet.randomElement(using: &generator)! })
        return "gen-\(Int(Date().timeIntervalSince1970))-\(suffix)"
    }
}
