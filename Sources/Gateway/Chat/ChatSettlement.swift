import Alerts
import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

extension ChatPipeline {
    // MARK: Settle

    func generationRecord(
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
    func chargeTransfers(_ prepared: PreparedChat, attempt: PlannedAttempt, cost: Money) -> [TransferRequest] {
        guard cost > .zero else { return [] }
        let reserved = prepared.reservation?.amount ?? .zero
        let split = Charging.split(cost: cost, reserved: reserved)
        let memo = "\(attempt.model.id) via \(attempt.endpoint.tag)"
        let provider = Billing.SystemAccount.provider(attempt.provider.slug)
        var transfers: [TransferRequest] = []
        if split.charge > .zero {
            transfers.append(
                TransferRequest(
                    idempotencyKey: "charge:" + prepared.generationID, debit: prepared.key.accountID, credit: provider,
                    amount: split.charge, kind: .charge, keyID: prepared.key.id, generationID: prepared.generationID, memo: memo))
        }
        if split.overage > .zero {
            let overage = split.overage
            if split.capped {
                logger.error(
                    "upstream usage implies a cost beyond the ledger's largest entry",
                    metadata: [
                        "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)", "cost": "\(cost)",
                    ])
            }
            metrics.overage(provider: attempt.provider.slug, amount: overage)
            alerts?.emit(
                AlertEvent(
                    id: "\(AlertEvent.Kind.overage.rawValue):\(prepared.generationID)", kind: .overage,
                    summary: "\(attempt.endpoint.tag) billed $\(overage.decimalString) beyond request \(prepared.generationID)'s "
                        + "reservation; booked to \(Billing.SystemAccount.overage)",
                    data: [
                        "generation_id": .string(prepared.generationID), "endpoint": .string(attempt.endpoint.tag),
                        "account": .string(prepared.key.accountID), "reserved": .string(reserved.decimalString),
                        "cost": .string(cost.decimalString), "overage": .string(overage.decimalString),
                    ]))
            logger.warning(
                "upstream charged more than the reservation; the excess is overage",
                metadata: [
                    "generation": "\(prepared.generationID)", "provider": "\(attempt.endpoint.tag)",
                    "reserved": "\(reserved)", "cost": "\(cost)",
                ])
            transfers.append(
                TransferRequest(
                    idempotencyKey: "overage:" + prepared.generationID, debit: Billing.SystemAccount.overage, credit: provider,
                    amount: overage, kind: .overage, keyID: prepared.key.id, generationID: prepared.generationID,
                    memo: "beyond the reservation: " + memo))
        }
        return transfers
    }

    /// Posts a request's charges (none for a failure) and insurance entries, stores its generation
    /// record and closes its hold and idempotency claim, in one ledger transaction. It runs outside
    /// the request's cancellation: a client that hangs up must not stop its own settlement.
    @inline(never)  // a frame of its own (see ChatPipeline)
    func settle(
        _ prepared: PreparedChat, transfers: [TransferRequest], generation: GenerationRecord, outcome: AccessLog.Outcome,
        response: JSONValue? = nil
    ) async {
        accessLog.settled(generation, outcome: outcome, streamed: prepared.request.stream)
        metrics.generation(generation, outcome: outcome.name)
        let (credit, logger) = (self.credit, self.logger)
        let idempotency: IdempotencyOutcome? = prepared.idempotencyKey.map { key in
            response.map { .completed(account: prepared.key.accountID, key: key, response: JSONWriter.string($0)) }
                ?? .released(account: prepared.key.accountID, key: key)
        }
        let charged = Self.charged(prepared, transfers)
        let keyLimited = prepared.key.limit != nil
        if prepared.keyReservation > .zero || (keyLimited && charged > .zero) {
            keyLimits.settle(prepared.key.id, reserved: prepared.keyReservation, charged: charged)
        }
        let (keyLimits, keyID) = (self.keyLimits, prepared.key.id)
        @Sendable func post() async -> SettlementCommitter.Receipt {
            let receipt = await credit.settle(
                prepared.reservation, charged: charged, transfers: transfers,
                generation: generation, idempotency: idempotency)
            switch receipt {
            case .committed: if keyLimited { keyLimits.committed(keyID, charged: charged) }
            case .spooled, .held: if keyLimited { keyLimits.spooled(keyID, charged: charged) }
            case .rejected: logger.critical("ledger settlement failed", metadata: ["generation": "\(generation.id)"])
            }
            return receipt
        }
        guard let trace = prepared.trace else {
            await Task { _ = await post() }.value
            return
        }
        await Task { await traceSettlement(trace, generation: generation, outcome: outcome) { await post() } }.value
    }

    @inline(never)  // a frame of its own (see ChatPipeline)
    func settleSuccess(
        _ prepared: PreparedChat, result: AttemptResult, records: [AttemptRecord],
        insurance: [TransferRequest]
    ) async -> CostBreakdown {
        let estimate = prepared.request.promptTokenEstimate
        let usage =
            Charging.usage(reported: result.usage, deliveredPieces: result.delivered, promptEstimate: estimate)
            ?? TokenUsage(promptTokens: estimate / 2, completionTokens: 0)
        let upstreamCost = Charging.success(usage: usage, finishReason: result.finishReason, pricing: result.attempt.endpoint.pricing)
        let transfers = chargeTransfers(prepared, attempt: result.attempt, cost: upstreamCost.total)
        let cost = upstreamCost.charged(Self.charged(prepared, transfers))
        let native = result.accumulator.completedChoices().first?["native_finish_reason"]?.stringValue
        let record = generationRecord(
            prepared, attempt: result.attempt, usage: usage, cost: cost.total, finishReason: result.finishReason,
            nativeFinishReason: native, upstreamID: result.accumulator.upstreamID, cancelled: false,
            firstToken: result.firstTokenAt, records: Self.withProviderCost(records, transfers))
        let response = prepared.idempotencyKey == nil ? nil : ChatResponses.completion(prepared, result: result, cost: cost)
        await settle(prepared, transfers: transfers + insurance, generation: record, outcome: .success, response: response)
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
    @inline(never)  // a frame of its own (see ChatPipeline)
    func settleFailure(
        _ prepared: PreparedChat, attempt: PlannedAttempt, records: [AttemptRecord],
        progress: AttemptProgress, delivered: Bool, insurance: [TransferRequest], status: Int
    ) async {
        let record = generationRecord(
            prepared, attempt: delivered ? attempt : nil, usage: progress.usage ?? TokenUsage(), cost: .zero,
            finishReason: "error", nativeFinishReason: "error", upstreamID: progress.upstreamID, cancelled: false,
            firstToken: progress.firstToken, records: records)
        await settle(prepared, transfers: insurance, generation: record, outcome: .failed(status: status))
    }

    /// The client hung up: the upstream call was cancelled, and the tokens generated until then
    /// are charged (the upstream's usage when it was reported, else one token per delivered piece).
    @inline(never)  // a frame of its own (see ChatPipeline)
    func settleCancelled(
        _ prepared: PreparedChat, attempt: PlannedAttempt, progress: AttemptProgress,
        records: [AttemptRecord], insurance: [TransferRequest]
    ) async {
        let (usage, upstreamCost) = Charging.cancelled(
            reported: progress.usage, deliveredPieces: progress.delivered, promptEstimate: prepared.request.promptTokenEstimate,
            pricing: attempt.endpoint.pricing)
        let transfers = chargeTransfers(prepared, attempt: attempt, cost: upstreamCost.total)
        var all = records
        all.append(
            AttemptRecord(
                provider: attempt.endpoint.tag, providerName: attempt.provider.name,
                model: attempt.model.id, status: "cancelled", latencyMs: 0,
                error: "The client closed the connection"))
        let record = generationRecord(
            prepared, attempt: attempt, usage: usage, cost: Self.charged(prepared, transfers), finishReason: nil,
            nativeFinishReason: nil, upstreamID: progress.upstreamID, cancelled: true, firstToken: progress.firstToken,
            records: Self.withProviderCost(all, transfers))
        await settle(prepared, transfers: transfers + insurance, generation: record, outcome: .cancelled)
    }
}
