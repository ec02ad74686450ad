import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Queries

    public func balance(account: String) async throws -> AccountBalance {
        guard
            let row = try await Self.rows(
                client.query(
                    "SELECT balance, held FROM balances WHERE account_id = \(account)", logger: logger)
            ).first
        else { throw LedgerError.unknownAccount(account) }
        let balance = try row["balance"].decode(Int64.self)
        let held = try row["held"].decode(Int64.self)
        return AccountBalance(balance: Money(nanos: balance), available: Money(nanos: balance - held))
    }

    static func query(_ sql: String, _ values: [EntryQuery.Value]) throws -> PostgresQuery {
        var bindings = PostgresBindings()
        for value in values {
            switch value {
            case .text(let text): bindings.append(text)
            case .integer(let number): bindings.append(number)
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: bindings)
    }

    public func entries(_ query: EntryQuery) async throws -> [LedgerEntry] {
        let logger = self.logger
        return try await Self.entries(query) { try await client.query($0, logger: logger) }
    }

    /// All pages in one repeatable-read snapshot: a transfer that took a lower id but commits
    /// while the export runs (ids are taken before commit) would otherwise fall between pages.
    public func forEachEntry(_ query: EntryQuery, pageSize: Int, _ body: ([LedgerEntry]) async throws -> Void) async throws {
        let logger = self.logger
        try await client.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                // The pages are written to a client between reads, which may be slow.
                try await connection.query("SET LOCAL idle_in_transaction_session_timeout = '60s'", logger: logger)
                try await Self.pages(
                    of: query, pageSize: pageSize,
                    read: { page in try await Self.entries(page) { try await connection.query($0, logger: logger) } }, body)
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    /// The statement a page of entries is read with (the console's ledger page, the API, exports):
    /// newest first by id, so an index gives each page without reading the rest.
    static func entriesStatement(_ query: EntryQuery) throws -> PostgresQuery {
        let (conditions, values) = query.conditions { "$\($0)" }
        let sql = """
            SELECT t.id, t.idempotency_key, t.debit_account, t.credit_account, t.amount, t.kind, t.key_id, t.generation_id,
              t.memo, t.created_at, g.model
            FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
            WHERE \(conditions) ORDER BY t.id DESC LIMIT \(max(0, query.limit))
            """
        return try Self.query(sql, values)
    }

    static func entries(_ query: EntryQuery, run: (PostgresQuery) async throws -> PostgresRowSequence) async throws -> [LedgerEntry] {
        return try await rows(run(try entriesStatement(query))).map { row in
            LedgerEntry(
                transfer: Transfer(
                    id: try row["id"].decode(Int64.self), idempotencyKey: try row["idempotency_key"].decode(String.self),
                    debitAccount: try row["debit_account"].decode(String.self),
                    creditAccount: try row["credit_account"].decode(String.self),
                    amount: Money(nanos: try row["amount"].decode(Int64.self)),
                    kind: TransferKind(rawValue: try row["kind"].decode(String.self)) ?? .adjustment,
                    keyID: try row["key_id"].decode(String?.self), generationID: try row["generation_id"].decode(String?.self),
                    memo: try row["memo"].decode(String?.self), createdAt: date(try row["created_at"].decode(Int64.self))),
                model: try row["model"].decode(String?.self))
        }
    }

    public func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow] {
        var charges = query
        charges.kind = .charge
        let (conditions, values) = charges.conditions { "$\($0)" }
        let group =
            switch grouping {
            case .day: "to_char(to_timestamp(t.created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            case .hour: "to_char(to_timestamp(t.created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00')"
            case .model: "COALESCE(g.model, '')"
            case .provider: "REPLACE(t.credit_account, 'provider:', '')"
            case .key: "COALESCE(t.key_id, '')"
            case .account: "t.debit_account"
            }
        let sql = """
            SELECT \(group) AS grp, SUM(t.amount)::BIGINT AS amount, COUNT(*)::BIGINT AS requests
            FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
            WHERE \(conditions) GROUP BY grp ORDER BY amount DESC, grp
            """
        return try await Self.rows(client.query(Self.query(sql, values), logger: logger)).map {
            SpendRow(
                group: try $0["grp"].decode(String.self), amount: Money(nanos: try $0["amount"].decode(Int64.self)),
                requests: Int(try $0["requests"].decode(Int64.self)))
        }
    }

    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        let credits = try await Self.int(
            client.query(
                """
                SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE credit_account = \(account) AND kind IN ('purchase', 'grant', 'refund')
                """, logger: logger))
        let usage = try await Self.int(
            client.query(
                "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE debit_account = \(account) AND kind = 'charge'",
                logger: logger))
        return (Money(nanos: credits), Money(nanos: usage))
    }

    public func purchasedTotal(account: String) async throws -> Money {
        Money(
            nanos: try await Self.int(
                client.query(
                    "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE credit_account = \(account) AND kind = 'purchase'",
                    logger: logger)))
    }

    /// Checks every invariant in one snapshot (a read-only REPEATABLE READ transaction), a page
    /// of rows per statement, so no statement holds the database for long.
    public func verify() async throws -> LedgerVerification {
        let logger = self.logger
        return try await client.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                let result = try await Self.verify(connection, logger: logger)
                try await connection.query("COMMIT", logger: logger)
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    static func verify(_ connection: PostgresConnection, logger: Logger) async throws -> LedgerVerification {
        var result = LedgerVerification()
        var lastAccount = ""
        while true {
            let rows = try await Self.rows(
                connection.query(
                    """
                    SELECT b.account_id, b.balance, b.held,
                      (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = b.account_id)::BIGINT
                      - (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = b.account_id)::BIGINT AS derived,
                      (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = b.account_id AND status = 'pending')::BIGINT AS derived_held
                    FROM balances b WHERE b.account_id > \(lastAccount) ORDER BY b.account_id LIMIT 1000
                    """, logger: logger))
            guard let last = rows.last else { break }
            for row in rows {
                result.account(
                    try row["account_id"].decode(String.self), balance: try row["balance"].decode(Int64.self),
                    held: try row["held"].decode(Int64.self), derivedBalance: try row["derived"].decode(Int64.self),
                    derivedHeld: try row["derived_held"].decode(Int64.self))
            }
            lastAccount = try last["account_id"].decode(String.self)
        }
        var lastGeneration = ""
        while true {
            // One page of generations joined to their transfers (by the generation index): a plan
            // that stays a page's work whatever the planner knows about the tables.
            let rows = try await Self.rows(
                connection.query(
                    """
                    WITH page AS (SELECT id, cost, attempts FROM generations WHERE id > \(lastGeneration) ORDER BY id LIMIT 2000)
                    SELECT p.id, p.cost, p.attempts,
                      COALESCE(SUM(t.amount) FILTER (WHERE t.kind = 'charge'), 0)::BIGINT AS charged,
                      COALESCE(SUM(t.amount) FILTER (WHERE t.kind IN ('charge', 'overage', 'insurance')
                                                       AND t.credit_account LIKE 'provider:%'), 0)::BIGINT AS payable
                    FROM page p LEFT JOIN LATERAL (SELECT amount, kind, credit_account FROM transfers WHERE generation_id = p.id) t ON true
                    GROUP BY p.id, p.cost, p.attempts ORDER BY p.id
                    """, logger: logger))
            guard let last = rows.last else { break }
            for row in rows {
                result.generation(
                    try row["id"].decode(String.self), cost: try row["cost"].decode(Int64.self),
                    charged: try row["charged"].decode(Int64.self), payable: try row["payable"].decode(Int64.self),
                    attempts: try row["attempts"].decode(String.self))
            }
            lastGeneration = try last["id"].decode(String.self)
        }
        func ids(_ sql: PostgresQuery) async throws -> [String] {
            try await Self.rows(connection.query(sql, logger: logger)).map { "entry \(try $0["id"].decode(Int64.self))" }
        }
        let orphanCharges = try await ids(
            """
            SELECT id FROM transfers t WHERE kind = 'charge'
              AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
            """)
        let orphanPayables = try await ids(
            """
            SELECT id FROM transfers t WHERE kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%'
              AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
            """)
        let grace = Int64(LedgerVerification.expiryGrace * 1000)
        let expired = try await Self.rows(
            connection.query(
                """
                SELECT id FROM holds WHERE status = 'pending' AND expires_at < \(unescaped: databaseNow) - \(grace) LIMIT 10000
                """, logger: logger)
        ).map { try $0["id"].decode(String.self) }
        let count = try await Self.int(connection.query("SELECT COUNT(*)::BIGINT FROM transfers", logger: logger))
        result.finish(transfers: Int(count), orphanCharges: orphanCharges, orphanPayables: orphanPayables, expiredHolds: expired)
        return result
    }

    // MARK: Generations

    public func freeRequestCount(account: String, since: [Date]) async throws -> [Int] {
        var counts: [Int] = []
        for start in since {
            counts.append(
                Int(
                    try await Self.int(
                        client.query(
                            """
                            SELECT COUNT(*)::BIGINT FROM generations WHERE account_id = \(account) AND created_at >= \(Self.millis(start))
                              AND model LIKE '%:free'
                            """, logger: logger))))
        }
        return counts
    }

    public func generation(id: String) async throws -> GenerationRecord? {
        guard let row = try await Self.rows(client.query("SELECT * FROM generations WHERE id = \(id)", logger: logger)).first else {
            return nil
        }
        let attempts = (try? JSONDecoder().decode([AttemptRecord].self, from: Data(try row["attempts"].decode(String.self).utf8))) ?? []
        func int(_ name: String) throws -> Int { Int(try row[name].decode(Int64.self)) }
        return GenerationRecord(
            id: id, accountID: try row["account_id"].decode(String.self), keyID: try row["key_id"].decode(String?.self),
            model: try row["model"].decode(String.self), providerName: try row["provider_name"].decode(String?.self),
            providerTag: try row["provider_tag"].decode(String?.self), upstreamID: try row["upstream_id"].decode(String?.self),
            streamed: try row["streamed"].decode(Bool.self), cancelled: try row["cancelled"].decode(Bool.self),
            finishReason: try row["finish_reason"].decode(String?.self),
            nativeFinishReason: try row["native_finish_reason"].decode(String?.self),
            usage: TokenUsage(
                promptTokens: try int("tokens_prompt"), completionTokens: try int("tokens_completion"),
                cachedTokens: try int("tokens_cached"), cacheWriteTokens: try int("tokens_cache_write"),
                reasoningTokens: try int("tokens_reasoning")),
            cost: Money(nanos: try row["cost"].decode(Int64.self)), latencyMs: try int("latency_ms"),
            generationTimeMs: try int("generation_time_ms"), attempts: attempts,
            createdAt: Self.date(try row["created_at"].decode(Int64.self)))
    }
}
