import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Accounts and transfers

    @discardableResult
    public func createAccount(id: String, name: String) async throws -> Account {
        let logger = self.logger
        try await transaction { try await Self.ensureAccount($0, id: id, name: name, isSystem: false, logger: logger) }
        return try await account(id: id)!
    }

    public func account(id: String) async throws -> Account? {
        try await Self.rows(client.query("SELECT id, name, is_system, created_at, region FROM accounts WHERE id = \(id)", logger: logger))
            .first.map(Self.account)
    }

    @discardableResult
    public func post(_ transfers: [TransferRequest]) async throws -> Int {
        try await requireAccounts(transfers.flatMap { [$0.debitAccount, $0.creditAccount] })
        let logger = self.logger
        return try await transaction { connection in
            var deltas = BalanceDeltas()
            var recorded = 0
            for transfer in transfers where try await Self.post(connection, transfer, deltas: &deltas, logger: logger) { recorded += 1 }
            try await deltas.apply(connection, logger: logger)
            return recorded
        }
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord) async throws {
        try await requireAccounts([key.accountID])
        let logger = self.logger
        try await transaction { connection in _ = try await Self.insertKey(connection, key, logger: logger) }
    }

    /// Inserts `key` (its account must exist); false when it is there already.
    static func insertKey(_ connection: PostgresConnection, _ key: KeyRecord, logger: Logger) async throws -> Bool {
        let (limit, expires, created) = (key.limit?.nanos, key.expiresAt.map(Self.millis), Self.millis(key.createdAt))
        // Nodes starting together insert the same starter key at once: a conflict on either
        // unique column (the id is the hash's prefix) means it is there already. Naming only
        // `hash` let the racing insert fail on the primary key.
        let inserted = try await rows(
            connection.query(
                """
                INSERT INTO api_keys (id, account_id, hash, label, name, is_admin, disabled, limit_nanos, limit_reset, expires_at,
                                      created_at, region, admin_role)
                VALUES (\(key.id), \(key.accountID), \(key.hash), \(key.label), \(key.name), \(key.isAdmin), \(key.disabled),
                        \(limit), \(key.limitReset), \(expires), \(created), \(key.region), \(key.adminRole?.rawValue))
                ON CONFLICT DO NOTHING RETURNING id
                """, logger: logger))
        return !inserted.isEmpty
    }

    static let keyColumns = """
        k.id, k.account_id, k.hash, k.label, k.name, k.is_admin, k.disabled, k.limit_nanos, k.limit_reset, k.expires_at, k.created_at,
        k.region, k.admin_role, a.region AS account_region
        """
    static let keyFrom = "api_keys k JOIN accounts a ON a.id = k.account_id"

    static func keyRecord(_ row: PostgresRandomAccessRow) throws -> KeyRecord {
        KeyRecord(
            id: try row["id"].decode(String.self), accountID: try row["account_id"].decode(String.self),
            hash: try row["hash"].decode(String.self), label: try row["label"].decode(String.self),
            name: try row["name"].decode(String.self),
            adminRole: AdminRole.stored(isAdmin: try row["is_admin"].decode(Bool.self), try row["admin_role"].decode(String?.self)),
            disabled: try row["disabled"].decode(Bool.self),
            limit: try row["limit_nanos"].decode(Int64?.self).map { Money(nanos: $0) },
            limitReset: try row["limit_reset"].decode(String?.self),
            expiresAt: try row["expires_at"].decode(Int64?.self).map(date), createdAt: date(try row["created_at"].decode(Int64.self)),
            region: try row["region"].decode(String?.self), accountRegion: try row["account_region"].decode(String?.self))
    }

    public func key(id: String) async throws -> KeyRecord? {
        try await Self.rows(
            client.query("SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.id = \(id)", logger: logger)
        ).first.map(Self.keyRecord)
    }

    public func key(hash: String) async throws -> KeyRecord? {
        try await Self.rows(
            client.query(
                "SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.hash = \(hash)", logger: logger)
        ).first.map(Self.keyRecord)
    }

    public func keys(account: String) async throws -> [KeyRecord] {
        try await Self.rows(
            client.query(
                "SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.account_id = \(account) ORDER BY k.created_at",
                logger: logger)
        )
        .map(Self.keyRecord)
    }

    public func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord? {
        let logger = self.logger
        return try await transaction { connection in
            try await Self.update(
                connection, keyHash: hash, KeyUpdate(name: name, disabled: disabled, limit: limit, limitReset: limitReset), logger: logger)
        }
    }

    static func key(_ connection: PostgresConnection, hash: String, lock: Bool = false, logger: Logger) async throws -> KeyRecord? {
        try await rows(
            connection.query(
                "SELECT \(unescaped: keyColumns) FROM \(unescaped: keyFrom) WHERE k.hash = \(hash)\(unescaped: lock ? " FOR UPDATE OF k" : "")",
                logger: logger)
        ).first.map(keyRecord)
    }

    /// Applies `update` to the key with this hash; the key as it is now, nil when there is none.
    static func update(_ connection: PostgresConnection, keyHash hash: String, _ update: KeyUpdate, logger: Logger) async throws
        -> KeyRecord?
    {
        if let name = update.name { try await connection.query("UPDATE api_keys SET name = \(name) WHERE hash = \(hash)", logger: logger) }
        if let disabled = update.disabled {
            try await connection.query("UPDATE api_keys SET disabled = \(disabled) WHERE hash = \(hash)", logger: logger)
        }
        if let limit = update.limit {
            let nanos = limit?.nanos
            try await connection.query("UPDATE api_keys SET limit_nanos = \(nanos) WHERE hash = \(hash)", logger: logger)
        }
        if let limitReset = update.limitReset {
            try await connection.query("UPDATE api_keys SET limit_reset = \(limitReset) WHERE hash = \(hash)", logger: logger)
        }
        if let region = update.region {
            try await connection.query("UPDATE api_keys SET region = \(region) WHERE hash = \(hash)", logger: logger)
        }
        return try await key(connection, hash: hash, logger: logger)
    }

    public func setRegion(account: String, region: String?) async throws -> Bool {
        !(try await Self.rows(
            client.query(
                "UPDATE accounts SET region = \(region) WHERE id = \(account) AND NOT is_system RETURNING id", logger: logger))).isEmpty
    }

    public func setRegion(keyHash: String, region: String?) async throws -> KeyRecord? {
        try await client.query("UPDATE api_keys SET region = \(region) WHERE hash = \(keyHash)", logger: logger)
        return try await key(hash: keyHash)
    }

    public func deleteKey(hash: String) async throws -> Bool {
        !(try await Self.rows(client.query("DELETE FROM api_keys WHERE hash = \(hash) RETURNING id", logger: logger))).isEmpty
    }

    public func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool {
        let updated = try await Self.rows(
            client.query(
                "UPDATE api_keys SET disabled = \(disabled) WHERE id = \(id) RETURNING id", logger: logger))
        return !updated.isEmpty
    }

    public func keyUsage(keyID: String, now: Date) async throws -> KeyUsage {
        let windows = UsageWindows(now: now)
        let (day, week, month) = (Self.millis(windows.day), Self.millis(windows.week), Self.millis(windows.month))
        guard
            let row = try await Self.rows(
                client.query(
                    """
                    SELECT COALESCE(SUM(amount), 0)::BIGINT AS total,
                      COALESCE(SUM(CASE WHEN created_at >= \(day) THEN amount END), 0)::BIGINT AS daily,
                      COALESCE(SUM(CASE WHEN created_at >= \(week) THEN amount END), 0)::BIGINT AS weekly,
                      COALESCE(SUM(CASE WHEN created_at >= \(month) THEN amount END), 0)::BIGINT AS monthly
                    FROM transfers WHERE key_id = \(keyID) AND kind = 'charge'
                    """, logger: logger)
            ).first
        else { return KeyUsage() }
        func money(_ name: String) throws -> Money { Money(nanos: try row[name].decode(Int64.self)) }
        return KeyUsage(total: try money("total"), daily: try money("daily"), weekly: try money("weekly"), monthly: try money("monthly"))
    }
}
