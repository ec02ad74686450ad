import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Settlement

    @discardableResult
    public func settle(_ batch: [Settlement]) async throws -> SettlementResult {
        try await write { db in
            var result = SettlementResult()
            for settlement in batch { try Self.settle(db, settlement, into: &result) }
            return result
        }
    }

    static func settle(_ db: Database, _ settlement: Settlement, into result: inout SettlementResult) throws {
        var settlement = settlement
        if try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM generations WHERE id = ?"), arguments: [settlement.generation.id]) != nil
        {
            return  // replay
        }
        // Fencing: a claim another request took over is not this settlement's to close or charge
        // for — nor is one that is gone (taken over, then released by the request that took it).
        if let outcome = settlement.idempotency {
            let owner = try String.fetchOne(
                db.cachedStatement(sql: "SELECT generation_id FROM idempotent_requests WHERE account_id = ? AND key = ?"),
                arguments: [outcome.account, outcome.key])
            if owner != settlement.generation.id { settlement = settlement.refusingCharges() }
        }
        let generation = settlement.generation
        var backed = true
        switch settlement.reservation {
        case .lease(let leaseID, let release)?:
            backed = try shrinkLease(db, id: leaseID, by: release) != nil
        case nil:
            backed = false
        }
        if !backed {
            switch settlement.reservation {
            case .lease(let id, _)?: result.closedReservations.insert(id)
            case nil: break
            }
            // The reservation expired before its request settled: the tokens were served and the
            // provider is paid, but the customer pays only what it still has available.
            var available: [String: Money] = [:]
            for account in Set(settlement.transfers.map(\.debitAccount)) where !Billing.SystemAccount.isSystem(account) {
                if let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"), arguments: [account])
                {
                    available[account] = Money(nanos: (row["balance"] as Int64) - (row["held"] as Int64))
                }
            }
            settlement = settlement.coveringShortfall(available: &available)
        }
        for transfer in settlement.transfers { try post(db, transfer) }
        try insertGeneration(db, settlement.generation)
        switch settlement.idempotency {
        case .completed(let account, let key, let response)?:
            try db.cachedStatement(
                sql: "UPDATE idempotent_requests SET status = 'done', response = ? WHERE account_id = ? AND key = ? AND generation_id = ?"
            )
            .execute(arguments: [response, account, key, generation.id])
        case .released(let account, let key)?:
            try db.cachedStatement(
                sql: "DELETE FROM idempotent_requests WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'"
            )
            .execute(arguments: [account, key, generation.id])
        case nil:
            break
        }
    }

    /// Shrinks an open lease by up to `amount`; returns what it still reserves, nil when it is not open.
    @discardableResult
    static func shrinkLease(_ db: Database, id: String, by amount: Money) throws -> Money? {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT account_id, amount, status FROM holds WHERE id = ?"), arguments: [id]),
            row["status"] as String == HoldStatus.pending.rawValue
        else { return nil }
        let current: Int64 = row["amount"]
        let release = min(max(0, amount.nanos), current)
        try db.cachedStatement(sql: "UPDATE holds SET amount = amount - ? WHERE id = ?").execute(arguments: [release, id])
        try db.cachedStatement(sql: "UPDATE balances SET held = held - ? WHERE account_id = ?").execute(arguments: [
            release, row["account_id"] as String,
        ])
        return Money(nanos: current - release)
    }

    static func insertGeneration(_ db: Database, _ g: GenerationRecord) throws {
        let attempts = AttemptRecord.json(g.attempts)
        try db.cachedStatement(
            sql: """
                INSERT OR IGNORE INTO generations (id, account_id, key_id, model, provider_name, provider_tag, upstream_id,
                  streamed, cancelled, finish_reason, native_finish_reason, tokens_prompt, tokens_completion, tokens_cached,
                  tokens_cache_write, tokens_reasoning, cost, latency_ms, generation_time_ms, attempts, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            g.id, g.accountID, g.keyID, g.model, g.providerName, g.providerTag, g.upstreamID, g.streamed, g.cancelled,
            g.finishReason, g.nativeFinishReason, g.usage.promptTokens, g.usage.completionTokens, g.usage.cachedTokens,
            g.usage.cacheWriteTokens, g.usage.reasoningTokens, g.cost.nanos, g.latencyMs, g.generationTimeMs, attempts,
            millis(g.createdAt),
        ])
    }
}
