import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import SignalboxCore

/// The embedded single-node ledger: one SQLite file in WAL mode.
///
/// Every write is one transaction on one connection, serialised by a lock; balances are cached
/// in `balances` and updated in the same transaction as the entries they summarise.
/// `synchronous=NORMAL` in WAL mode survives a process crash (the case that matters for a
/// killed node); a power cut may lose the last moments of commits (see Docs/ledger.md).
public final class SQLiteLedgerStore: LedgerStore {
    let connection: SQLiteConnection
    let lock = AsyncLock()

    private init(connection: SQLiteConnection) { self.connection = connection }

    /// Opens (creating if needed) the ledger at `path`, or an in-memory one for `nil`.
    public static func open(path: String?, logger: Logger = Logger(label: "signalbox.ledger")) async throws -> SQLiteLedgerStore {
        let storage: SQLiteConnection.Storage = path.map { .file(path: $0) } ?? .memory
        let connection = try await SQLiteConnection.open(storage: storage, logger: logger)
        let store = SQLiteLedgerStore(connection: connection)
        _ = try await connection.query("PRAGMA journal_mode=WAL", [])
        _ = try await connection.query("PRAGMA synchronous=NORMAL", [])
        _ = try await connection.query("PRAGMA foreign_keys=ON", [])
        _ = try await connection.query("PRAGMA busy_timeout=5000", [])
        try await store.migrate()
        return store
    }

    public func close() async throws { try await connection.close() }

    // MARK: Schema

    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE accounts (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, is_system INTEGER NOT NULL, created_at INTEGER NOT NULL)
            """,
            """
            CREATE TABLE balances (
                account_id TEXT PRIMARY KEY REFERENCES accounts(id),
                balance INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0)
            """,
            """
            CREATE TABLE transfers (
                id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL UNIQUE,
                debit_account TEXT NOT NULL REFERENCES accounts(id), credit_account TEXT NOT NULL REFERENCES accounts(id),
                amount INTEGER NOT NULL CHECK (amount >= 0), kind TEXT NOT NULL,
                key_id TEXT, generation_id TEXT, memo TEXT, created_at INTEGER NOT NULL)
            """,
            "CREATE INDEX transfers_debit ON transfers(debit_account, id)",
            "CREATE INDEX transfers_credit ON transfers(credit_account, id)",
            "CREATE INDEX transfers_key ON transfers(key_id, created_at)",
            """
            CREATE TABLE holds (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), amount INTEGER NOT NULL,
                status TEXT NOT NULL, key_id TEXT, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL)
            """,
            "CREATE INDEX holds_pending ON holds(status, expires_at)",
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), hash TEXT NOT NULL UNIQUE,
                label TEXT NOT NULL, name TEXT NOT NULL, is_admin INTEGER NOT NULL, disabled INTEGER NOT NULL,
                limit_nanos INTEGER, limit_reset TEXT, expires_at INTEGER, created_at INTEGER NOT NULL)
            """,
            """
            CREATE TABLE generations (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL,
                provider_name TEXT, provider_tag TEXT, upstream_id TEXT, streamed INTEGER NOT NULL,
                cancelled INTEGER NOT NULL, finish_reason TEXT, native_finish_reason TEXT,
                tokens_prompt INTEGER NOT NULL, tokens_completion INTEGER NOT NULL, tokens_cached INTEGER NOT NULL,
                tokens_cache_write INTEGER NOT NULL, tokens_reasoning INTEGER NOT NULL, cost INTEGER NOT NULL,
                latency_ms INTEGER NOT NULL, generation_time_ms INTEGER NOT NULL, attempts TEXT NOT NULL,
                created_at INTEGER NOT NULL)
            """,
        ]
    ]

    public func migrate() async throws {
        try await lock.withLock {
            _ = try await self.connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)", [])
            let rows = try await self.connection.query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations", [])
            let current = rows.first?.column("v")?.integer ?? 0
            for (index, statements) in SQLiteLedgerStore.migrations.enumerated() where index + 1 > current {
                try await self.transaction {
                    for statement in statements { _ = try await self.connection.query(statement, []) }
                    _ = try await self.connection.query("INSERT INTO schema_migrations (version) VALUES (?)", [.integer(index + 1)])
                }
            }
            try await self.transaction {
                for id in Billing.SystemAccount.all { try await self.ensureAccount(id: id, name: id, isSystem: true) }
            }
        }
    }

    // MARK: Helpers

    private func transaction<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        _ = try await connection.query("BEGIN IMMEDIATE", [])
        do {
            let result = try await body()
            _ = try await connection.query("COMMIT", [])
            return result
        } catch {
            _ = try? await connection.query("ROLLBACK", [])
            throw error
        }
    }

    private func write<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await lock.withLock { try await self.transaction(body) }
    }

    private func read<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await lock.withLock(body)
    }

    static func millis(_ date: Date) -> SQLiteData { .integer(Int(date.timeIntervalSince1970 * 1000)) }
    static func date(_ data: SQLiteData?) -> Date { Date(timeIntervalSince1970: Double(data?.integer ?? 0) / 1000) }
    static func text(_ value: String?) -> SQLiteData { value.map { .text($0) } ?? .null }

    private func ensureAccount(id: String, name: String, isSystem: Bool) async throws {
        _ = try await connection.query(
            "INSERT OR IGNORE INTO accounts (id, name, is_system, created_at) VALUES (?, ?, ?, ?)",
            [.text(id), .text(name), .integer(isSystem ? 1 : 0), Self.millis(Date())])
        _ = try await connection.query("INSERT OR IGNORE INTO balances (account_id) VALUES (?)", [.text(id)])
    }

    /// System accounts (`platform:…`, `provider:…`) come into being when first used.
    private func requireAccount(_ id: String) async throws {
        if id.hasPrefix("provider:") || id.hasPrefix("platform:") {
            try await ensureAccount(id: id, name: id, isSystem: true)
            return
        }
        let rows = try await connection.query("SELECT 1 FROM accounts WHERE id = ?", [.text(id)])
        if rows.isEmpty { throw LedgerError.unknownAccount(id) }
    }

    private func postOne(_ transfer: TransferRequest) async throws {
        guard transfer.amount >= .zero else { throw LedgerError.invalidAmount(transfer.amount) }
        let existing = try await connection.query(
            "SELECT debit_account, credit_account, amount FROM transfers WHERE idempotency_key = ?",
            [.text(transfer.idempotencyKey)])
        if let row = existing.first {
            let same = row.column("debit_account")?.string == transfer.debitAccount
                && row.column("credit_account")?.string == transfer.creditAccount
                && Int64(row.column("amount")?.integer ?? -1) == transfer.amount.nanos
            if same { return }
            throw LedgerError.idempotencyConflict(transfer.idempotencyKey)
        }
        try await requireAccount(transfer.debitAccount)
        try await requireAccount(transfer.creditAccount)
        _ = try await connection.query(
            """
            INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(transfer.idempotencyKey), .text(transfer.debitAccount), .text(transfer.creditAccount),
             .integer(Int(transfer.amount.nanos)), .text(transfer.kind.rawValue), Self.text(transfer.keyID),
             Self.text(transfer.generationID), Self.text(transfer.memo), Self.millis(Date())])
        _ = try await connection.query("UPDATE balances SET balance = balance - ? WHERE account_id = ?",
                                       [.integer(Int(transfer.amount.nanos)), .text(transfer.debitAccount)])
        _ = try await connection.query("UPDATE balances SET balance = balance + ? WHERE account_id = ?",
                                       [.integer(Int(transfer.amount.nanos)), .text(transfer.creditAccount)])
    }

    // MARK: Accounts and transfers

    public func createAccount(id: String, name: String) async throws -> Account {
        try await write {
            try await self.ensureAccount(id: id, name: name, isSystem: false)
        }
        return try await account(id: id)!
    }

    public func account(id: String) async throws -> Account? {
        try await read {
            let rows = try await self.connection.query("SELECT * FROM accounts WHERE id = ?", [.text(id)])
            return rows.first.map {
                Account(id: $0.column("id")?.string ?? id, name: $0.column("name")?.string ?? "",
                        isSystem: $0.column("is_system")?.bool ?? false, createdAt: Self.date($0.column("created_at")))
            }
        }
    }

    public func post(_ transfers: [TransferRequest]) async throws {
        try await write {
            for transfer in transfers { try await self.postOne(transfer) }
        }
    }

    // MARK: Holds

    public func placeHold(_ hold: HoldRequest) async throws -> HoldOutcome {
        guard hold.amount >= .zero else { throw LedgerError.invalidAmount(hold.amount) }
        return try await write {
            let existing = try await self.connection.query("SELECT status FROM holds WHERE id = ?", [.text(hold.id)])
            if !existing.isEmpty { return .placed }
            let rows = try await self.connection.query(
                "SELECT balance, held FROM balances WHERE account_id = ?", [.text(hold.account)])
            guard let row = rows.first else { throw LedgerError.unknownAccount(hold.account) }
            let available = Int64(row.column("balance")?.integer ?? 0) - Int64(row.column("held")?.integer ?? 0)
            guard available >= hold.amount.nanos else { return .insufficient(available: Money(nanos: available)) }
            _ = try await self.connection.query(
                "INSERT INTO holds (id, account_id, amount, status, key_id, expires_at, created_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                [.text(hold.id), .text(hold.account), .integer(Int(hold.amount.nanos)), Self.text(hold.keyID),
                 Self.millis(hold.expiresAt), Self.millis(Date())])
            _ = try await self.connection.query("UPDATE balances SET held = held + ? WHERE account_id = ?",
                                                [.integer(Int(hold.amount.nanos)), .text(hold.account)])
            return .placed
        }
    }

    /// Moves a pending hold to `status`, releasing its reservation. Returns false if it was not pending.
    private func closeHold(id: String, status: HoldStatus) async throws -> Bool {
        let rows = try await connection.query("SELECT account_id, amount, status FROM holds WHERE id = ?", [.text(id)])
        guard let row = rows.first else { throw LedgerError.unknownHold(id) }
        guard row.column("status")?.string == HoldStatus.pending.rawValue else { return false }
        _ = try await connection.query("UPDATE holds SET status = ? WHERE id = ?", [.text(status.rawValue), .text(id)])
        _ = try await connection.query("UPDATE balances SET held = held - ? WHERE account_id = ?",
                                       [.integer(row.column("amount")?.integer ?? 0), .text(row.column("account_id")?.string ?? "")])
        return true
    }

    public func settle(holdID: String, transfers: [TransferRequest], generation: GenerationRecord) async throws {
        try await write {
            let status = try await self.connection.query("SELECT status FROM holds WHERE id = ?", [.text(holdID)])
            guard let current = status.first?.column("status")?.string else { throw LedgerError.unknownHold(holdID) }
            if try await !self.connection.query("SELECT 1 FROM generations WHERE id = ?", [.text(generation.id)]).isEmpty {
                return  // replay
            }
            // A hold that expired before its request finished still gets its charge: the tokens
            // were served, and a settled charge is never dropped.
            if current == HoldStatus.pending.rawValue {
                _ = try await self.closeHold(id: holdID, status: transfers.isEmpty ? .voided : .posted)
            }
            for transfer in transfers { try await self.postOne(transfer) }
            try await self.insertGeneration(generation)
        }
    }

    public func voidHold(id: String) async throws {
        try await write { _ = try await self.closeHold(id: id, status: .voided) }
    }

    public func holdStatus(id: String) async throws -> HoldStatus? {
        try await read {
            let rows = try await self.connection.query("SELECT status FROM holds WHERE id = ?", [.text(id)])
            return rows.first?.column("status")?.string.flatMap(HoldStatus.init(rawValue:))
        }
    }

    public func expireHolds(now: Date) async throws -> Int {
        try await write {
            let rows = try await self.connection.query(
                "SELECT id FROM holds WHERE status = 'pending' AND expires_at < ?", [Self.millis(now)])
            for row in rows { _ = try await self.closeHold(id: row.column("id")?.string ?? "", status: .voided) }
            return rows.count
        }
    }

    // MARK: Queries

    public func balance(account: String) async throws -> AccountBalance {
        try await read {
            let rows = try await self.connection.query(
                "SELECT balance, held FROM balances WHERE account_id = ?", [.text(account)])
            guard let row = rows.first else { throw LedgerError.unknownAccount(account) }
            let balance = Int64(row.column("balance")?.integer ?? 0)
            let held = Int64(row.column("held")?.integer ?? 0)
            return AccountBalance(balance: Money(nanos: balance), available: Money(nanos: balance - held))
        }
    }

    public func entries(account: String, limit: Int) async throws -> [Transfer] {
        try await read {
            let rows = try await self.connection.query(
                "SELECT * FROM transfers WHERE debit_account = ? OR credit_account = ? ORDER BY id DESC LIMIT ?",
                [.text(account), .text(account), .integer(limit)])
            return rows.map { row in
                Transfer(
                    id: Int64(row.column("id")?.integer ?? 0),
                    idempotencyKey: row.column("idempotency_key")?.string ?? "",
                    debitAccount: row.column("debit_account")?.string ?? "",
                    creditAccount: row.column("credit_account")?.string ?? "",
                    amount: Money(nanos: Int64(row.column("amount")?.integer ?? 0)),
                    kind: TransferKind(rawValue: row.column("kind")?.string ?? "") ?? .adjustment,
                    keyID: row.column("key_id")?.string, generationID: row.column("generation_id")?.string,
                    memo: row.column("memo")?.string, createdAt: Self.date(row.column("created_at")))
            }
        }
    }

    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        try await read {
            let credits = try await self.connection.query(
                "SELECT COALESCE(SUM(amount), 0) AS s FROM transfers WHERE credit_account = ? AND kind IN ('purchase', 'grant', 'refund')",
                [.text(account)])
            let usage = try await self.connection.query(
                "SELECT COALESCE(SUM(amount), 0) AS s FROM transfers WHERE debit_account = ? AND kind = 'charge'",
                [.text(account)])
            return (Money(nanos: Int64(credits.first?.column("s")?.integer ?? 0)),
                    Money(nanos: Int64(usage.first?.column("s")?.integer ?? 0)))
        }
    }

    public func verify() async throws -> LedgerVerification {
        try await read {
            let rows = try await self.connection.query(
                """
                SELECT b.account_id, b.balance,
                  (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = b.account_id)
                  - (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = b.account_id) AS derived,
                  b.held,
                  (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = b.account_id AND status = 'pending') AS derived_held
                FROM balances b ORDER BY b.account_id
                """, [])
            var mismatched: [String] = []
            var total: Int64 = 0
            for row in rows {
                let cached = Int64(row.column("balance")?.integer ?? 0)
                total += cached
                if cached != Int64(row.column("derived")?.integer ?? 0)
                    || row.column("held")?.integer != row.column("derived_held")?.integer
                {
                    mismatched.append(row.column("account_id")?.string ?? "?")
                }
            }
            let count = try await self.connection.query("SELECT COUNT(*) AS n FROM transfers", [])
            return LedgerVerification(mismatchedAccounts: mismatched, totalOfBalances: Money(nanos: total),
                                      transferCount: count.first?.column("n")?.integer ?? 0)
        }
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord) async throws {
        try await write {
            try await self.requireAccount(key.accountID)
            _ = try await self.connection.query(
                """
                INSERT INTO api_keys (id, account_id, hash, label, name, is_admin, disabled, limit_nanos, limit_reset, expires_at, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(hash) DO NOTHING
                """,
                [.text(key.id), .text(key.accountID), .text(key.hash), .text(key.label), .text(key.name),
                 .integer(key.isAdmin ? 1 : 0), .integer(key.disabled ? 1 : 0),
                 key.limit.map { .integer(Int($0.nanos)) } ?? .null, Self.text(key.limitReset),
                 key.expiresAt.map(Self.millis) ?? .null, Self.millis(key.createdAt)])
        }
    }

    static func keyRecord(_ row: SQLiteRow) -> KeyRecord {
        KeyRecord(
            id: row.column("id")?.string ?? "", accountID: row.column("account_id")?.string ?? "",
            hash: row.column("hash")?.string ?? "", label: row.column("label")?.string ?? "",
            name: row.column("name")?.string ?? "", isAdmin: row.column("is_admin")?.bool ?? false,
            disabled: row.column("disabled")?.bool ?? false,
            limit: row.column("limit_nanos")?.integer.map { Money(nanos: Int64($0)) },
            limitReset: row.column("limit_reset")?.string,
            expiresAt: row.column("expires_at")?.integer.map { Date(timeIntervalSince1970: Double($0) / 1000) },
            createdAt: date(row.column("created_at")))
    }

    public func key(hash: String) async throws -> KeyRecord? {
        try await read {
            try await self.connection.query("SELECT * FROM api_keys WHERE hash = ?", [.text(hash)]).first.map(Self.keyRecord)
        }
    }

    public func keys(account: String) async throws -> [KeyRecord] {
        try await read {
            try await self.connection.query("SELECT * FROM api_keys WHERE account_id = ? ORDER BY created_at", [.text(account)])
                .map(Self.keyRecord)
        }
    }

    public func keyUsage(keyID: String, now: Date) async throws -> KeyUsage {
        let windows = UsageWindows(now: now)
        return try await read {
            let rows = try await self.connection.query(
                """
                SELECT COALESCE(SUM(amount), 0) AS total,
                  COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS daily,
                  COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS weekly,
                  COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS monthly
                FROM transfers WHERE key_id = ? AND kind = 'charge'
                """,
                [Self.millis(windows.day), Self.millis(windows.week), Self.millis(windows.month), .text(keyID)])
            let row = rows.first
            func money(_ name: String) -> Money { Money(nanos: Int64(row?.column(name)?.integer ?? 0)) }
            return KeyUsage(total: money("total"), daily: money("daily"), weekly: money("weekly"), monthly: money("monthly"))
        }
    }

    // MARK: Generations

    public func storeGeneration(_ generation: GenerationRecord) async throws {
        try await write { try await self.insertGeneration(generation) }
    }

    private func insertGeneration(_ g: GenerationRecord) async throws {
        let attempts = String(decoding: try JSONEncoder().encode(g.attempts), as: UTF8.self)
        _ = try await connection.query(
            """
            INSERT OR IGNORE INTO generations (id, account_id, key_id, model, provider_name, provider_tag, upstream_id,
              streamed, cancelled, finish_reason, native_finish_reason, tokens_prompt, tokens_completion, tokens_cached,
              tokens_cache_write, tokens_reasoning, cost, latency_ms, generation_time_ms, attempts, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [.text(g.id), .text(g.accountID), Self.text(g.keyID), .text(g.model), Self.text(g.providerName),
             Self.text(g.providerTag), Self.text(g.upstreamID), .integer(g.streamed ? 1 : 0), .integer(g.cancelled ? 1 : 0),
             Self.text(g.finishReason), Self.text(g.nativeFinishReason), .integer(g.usage.promptTokens),
             .integer(g.usage.completionTokens), .integer(g.usage.cachedTokens), .integer(g.usage.cacheWriteTokens),
             .integer(g.usage.reasoningTokens), .integer(Int(g.cost.nanos)), .integer(g.latencyMs),
             .integer(g.generationTimeMs), .text(attempts), Self.millis(g.createdAt)])
    }

    public func generation(id: String) async throws -> GenerationRecord? {
        try await read {
            guard let row = try await self.connection.query("SELECT * FROM generations WHERE id = ?", [.text(id)]).first else {
                return nil
            }
            let attempts = (try? JSONDecoder().decode([AttemptRecord].self, from: Data((row.column("attempts")?.string ?? "[]").utf8))) ?? []
            return GenerationRecord(
                id: id, accountID: row.column("account_id")?.string ?? "", keyID: row.column("key_id")?.string,
                model: row.column("model")?.string ?? "", providerName: row.column("provider_name")?.string,
                providerTag: row.column("provider_tag")?.string, upstreamID: row.column("upstream_id")?.string,
                streamed: row.column("streamed")?.bool ?? false, cancelled: row.column("cancelled")?.bool ?? false,
                finishReason: row.column("finish_reason")?.string,
                nativeFinishReason: row.column("native_finish_reason")?.string,
                usage: TokenUsage(
                    promptTokens: row.column("tokens_prompt")?.integer ?? 0,
                    completionTokens: row.column("tokens_completion")?.integer ?? 0,
                    cachedTokens: row.column("tokens_cached")?.integer ?? 0,
                    cacheWriteTokens: row.column("tokens_cache_write")?.integer ?? 0,
                    reasoningTokens: row.column("tokens_reasoning")?.integer ?? 0),
                cost: Money(nanos: Int64(row.column("cost")?.integer ?? 0)),
                latencyMs: row.column("latency_ms")?.integer ?? 0,
                generationTimeMs: row.column("generation_time_ms")?.integer ?? 0,
                attempts: attempts, createdAt: Self.date(row.column("created_at")))
        }
    }
}

/// The starts of the current UTC day, ISO week (Monday) and month, for key usage and limits.
public struct UsageWindows: Sendable {
    public var day: Date
    public var week: Date
    public var month: Date

    public init(now: Date) {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        day = calendar.startOfDay(for: now)
        week = calendar.dateInterval(of: .weekOfYear, for: now)?.start ?? day
        month = calendar.dateInterval(of: .month, for: now)?.start ?? day
    }
}
