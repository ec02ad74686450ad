import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Queries

    public func balance(account: String) async throws -> AccountBalance {
        try await database.read { db in
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"), arguments: [account])
            else {
                throw LedgerError.unknownAccount(account)
            }
            let balance: Int64 = row["balance"]
            let held: Int64 = row["held"]
            return AccountBalance(balance: Money(nanos: balance), available: Money(nanos: balance - held))
        }
    }

    static func arguments(_ values: [EntryQuery.Value]) -> StatementArguments {
        StatementArguments(
            values.map { value -> (any DatabaseValueConvertible)? in
                switch value {
                case .text(let text): text
                case .integer(let number): number
                }
            })
    }

    public func entries(_ query: EntryQuery) async throws -> [LedgerEntry] {
        let (conditions, values) = query.conditions { _ in "?" }
        return try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT t.*, g.model AS model FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
                    WHERE \(conditions) ORDER BY t.id DESC LIMIT ?
                    """, arguments: Self.arguments(values + [.integer(Int64(max(0, query.limit)))])
            ).map { row in
                LedgerEntry(
                    transfer: Transfer(
                        id: row["id"], idempotencyKey: row["idempotency_key"], debitAccount: row["debit_account"],
                        creditAccount: row["credit_account"], amount: Money(nanos: row["amount"]),
                        kind: TransferKind(rawValue: row["kind"]) ?? .adjustment, keyID: row["key_id"],
                        generationID: row["generation_id"], memo: row["memo"], createdAt: Self.date(row["created_at"])),
                    model: row["model"])
            }
        }
    }

    public func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow] {
        var charges = query
        charges.kind = .charge
        let (conditions, values) = charges.conditions { _ in "?" }
        let group =
            switch grouping {
            case .day: "strftime('%Y-%m-%d', t.created_at / 1000, 'unixepoch')"
            case .hour: "strftime('%Y-%m-%dT%H:00', t.created_at / 1000, 'unixepoch')"
            case .model: "COALESCE(g.model, '')"
            case .provider: "REPLACE(t.credit_account, 'provider:', '')"
            case .key: "COALESCE(t.key_id, '')"
            case .account: "t.debit_account"
            }
        return try await database.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT \(group) AS grp, SUM(t.amount) AS amount, COUNT(*) AS requests
                    FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
                    WHERE \(conditions) GROUP BY grp ORDER BY amount DESC, grp
                    """, arguments: Self.arguments(values)
            ).map {
                SpendRow(group: $0["grp"], amount: Money(nanos: $0["amount"]), requests: $0["requests"])
            }
        }
    }

    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        try await database.read { db in
            let credits =
                try Int64.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = ? AND kind IN ('purchase', 'grant', 'refund')
                            """), arguments: [account]) ?? 0
            let usage =
                try Int64.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = ? AND kind = 'charge'
                            """), arguments: [account]) ?? 0
            return (Money(nanos: credits), Money(nanos: usage))
        }
    }

    public func purchasedTotal(account: String) async throws -> Money {
        try await database.read { db in
            Money(
                nanos: try Int64.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = ? AND kind = 'purchase'
                            """), arguments: [account]) ?? 0)
        }
    }

    /// Checks every invariant in one read snapshot (WAL), a page of rows at a time.
    public func verify() async throws -> LedgerVerification {
        try await database.read { db in
            var result = LedgerVerification()
            var lastAccount = ""
            while true {
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT b.account_id, b.balance, b.held,
                          (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = b.account_id)
                          - (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = b.account_id) AS derived,
                          (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = b.account_id AND status = 'pending') AS derived_held
                        FROM balances b WHERE b.account_id > ? ORDER BY b.account_id LIMIT 1000
                        """, arguments: [lastAccount])
                guard let last = rows.last else { break }
                for row in rows {
                    result.account(
                        row["account_id"], balance: row["balance"], held: row["held"],
                        derivedBalance: row["derived"], derivedHeld: row["derived_held"])
                }
                lastAccount = last["account_id"]
            }
            var lastGeneration = ""
            while true {
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT g.id, g.cost, g.attempts,
                          (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE generation_id = g.id AND kind = 'charge') AS charged,
                          (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE generation_id = g.id
                             AND kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%') AS payable
                        FROM generations g WHERE g.id > ? ORDER BY g.id LIMIT 2000
                        """, arguments: [lastGeneration])
                guard let last = rows.last else { break }
                for row in rows {
                    result.generation(
                        row["id"], cost: row["cost"], charged: row["charged"], payable: row["payable"], attempts: row["attempts"])
                }
                lastGeneration = last["id"]
            }
            let orphanCharges = try Int64.fetchAll(
                db,
                sql: """
                    SELECT id FROM transfers t WHERE kind = 'charge'
                      AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
                    """
            ).map { "entry \($0)" }
            let orphanPayables = try Int64.fetchAll(
                db,
                sql: """
                    SELECT id FROM transfers t WHERE kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%'
                      AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
                    """
            ).map { "entry \($0)" }
            let expired = try String.fetchAll(
                db, sql: "SELECT id FROM holds WHERE status = 'pending' AND expires_at < ? LIMIT 10000",
                arguments: [Self.millis(Date()) - Int64(LedgerVerification.expiryGrace * 1000)])
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM transfers") ?? 0
            result.finish(transfers: count, orphanCharges: orphanCharges, orphanPayables: orphanPayables, expiredHolds: expired)
            return result
        }
    }

    // MARK: Generations

    public func freeRequestCount(account: String, since: [Date]) async throws -> [Int] {
        try await database.read { db in
            try since.map { start in
                try Int.fetchOne(
                    db.cachedStatement(
                        sql: """
                            SELECT COUNT(*) FROM generations WHERE account_id = ? AND created_at >= ? AND model LIKE '%:free'
                            """), arguments: [account, Self.millis(start)]) ?? 0
            }
        }
    }

    public func generation(id: String) async throws -> GenerationRecord? {
        try await database.read { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM generations WHERE id = ?"), arguments: [id]) else {
                return nil
            }
            let attempts = (try? JSONDecoder().decode([AttemptRecord].self, from: Data((row["attempts"] as String).utf8))) ?? []
            return GenerationRecord(
                id: id, accountID: row["account_id"], keyID: row["key_id"], model: row["model"],
                providerName: row["provider_name"], providerTag: row["provider_tag"], upstreamID: row["upstream_id"],
                streamed: row["streamed"], cancelled: row["cancelled"], finishReason: row["finish_reason"],
                nativeFinishReason: row["native_finish_reason"],
                usage: TokenUsage(
                    promptTokens: row["tokens_prompt"], completionTokens: row["tokens_completion"], cachedTokens: row["tokens_cached"],
                    cacheWriteTokens: row["tokens_cache_write"], reasoningTokens: row["tokens_reasoning"]),
                cost: Money(nanos: row["cost"]), latencyMs: row["latency_ms"], generationTimeMs: row["generation_time_ms"],
                attempts: attempts, createdAt: Self.date(row["created_at"]))
        }
    }
}
