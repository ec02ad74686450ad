import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Accounts and transfers

    @discardableResult
    public func createAccount(id: String, name: String) async throws -> Account {
        try await write { db in try Self.ensureAccount(db, id: id, name: name, isSystem: false) }
        return try await account(id: id)!
    }

    public func account(id: String) async throws -> Account? {
        try await database.read { db in try Self.account(db, id: id) }
    }

    @discardableResult
    public func post(_ transfers: [TransferRequest]) async throws -> Int {
        try await write { db in
            var recorded = 0
            for transfer in transfers where try Self.post(db, transfer) { recorded += 1 }
            return recorded
        }
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord) async throws {
        try await write { db in try Self.insertKey(db, key) }
    }

    /// Inserts `key`; false when a key with its hash is there already.
    @discardableResult
    static func insertKey(_ db: Database, _ key: KeyRecord) throws -> Bool {
        try Self.requireAccount(db, key.accountID)
        try db.cachedStatement(
            sql: """
                INSERT INTO api_keys (id, account_id, hash, label, name, is_admin, disabled, limit_nanos, limit_reset, expires_at,
                                      created_at, region, admin_role)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(hash) DO NOTHING
                """
        ).execute(arguments: [
            key.id, key.accountID, key.hash, key.label, key.name, key.isAdmin, key.disabled,
            key.limit?.nanos, key.limitReset, key.expiresAt.map(Self.millis), Self.millis(key.createdAt),
            key.region, key.adminRole?.rawValue,
        ])
        return db.changesCount > 0
    }

    static let keySelect = "SELECT k.*, a.region AS account_region FROM api_keys k JOIN accounts a ON a.id = k.account_id "

    static func keyRecord(_ row: Row) -> KeyRecord {
        KeyRecord(
            id: row["id"], accountID: row["account_id"], hash: row["hash"], label: row["label"], name: row["name"],
            adminRole: role(isAdmin: row["is_admin"], stored: row["admin_role"]), disabled: row["disabled"],
            limit: (row["limit_nanos"] as Int64?).map { Money(nanos: $0) }, limitReset: row["limit_reset"],
            expiresAt: (row["expires_at"] as Int64?).map(date), createdAt: date(row["created_at"]), region: row["region"],
            accountRegion: row["account_region"])
    }

    /// An admin key's role: keys from before roles were stored (NULL) are `admin`; a value this
    /// binary does not know (a newer node's role, a hand edit) is the least powerful, `auditor`.
    static func role(isAdmin: Bool, stored: String?) -> AdminRole? {
        AdminRole.stored(isAdmin: isAdmin, stored)
    }

    static func key(_ db: Database, hash: String) throws -> KeyRecord? {
        try Row.fetchOne(db.cachedStatement(sql: Self.keySelect + "WHERE k.hash = ?"), arguments: [hash]).map(Self.keyRecord)
    }

    public func key(id: String) async throws -> KeyRecord? {
        try await database.read { db in
            try Row.fetchOne(db.cachedStatement(sql: Self.keySelect + "WHERE k.id = ?"), arguments: [id]).map(Self.keyRecord)
        }
    }

    public func key(hash: String) async throws -> KeyRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: Self.keySelect + "WHERE k.hash = ?", arguments: [hash]).map(Self.keyRecord)
        }
    }

    public func keys(account: String) async throws -> [KeyRecord] {
        try await database.read { db in
            try Row.fetchAll(db, sql: Self.keySelect + "WHERE k.account_id = ? ORDER BY k.created_at", arguments: [account])
                .map(Self.keyRecord)
        }
    }

    public func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord? {
        try await write { db in
            try Self.update(db, keyHash: hash, KeyUpdate(name: name, disabled: disabled, limit: limit, limitReset: limitReset))
        }
    }

    /// Applies `update` to the key with this hash; the key as it is now, nil when there is none.
    static func update(_ db: Database, keyHash hash: String, _ update: KeyUpdate) throws -> KeyRecord? {
        if let name = update.name {
            try db.cachedStatement(sql: "UPDATE api_keys SET name = ? WHERE hash = ?").execute(arguments: [name, hash])
        }
        if let disabled = update.disabled {
            try db.cachedStatement(sql: "UPDATE api_keys SET disabled = ? WHERE hash = ?").execute(arguments: [disabled, hash])
        }
        if let limit = update.limit {
            try db.cachedStatement(sql: "UPDATE api_keys SET limit_nanos = ? WHERE hash = ?").execute(arguments: [limit?.nanos, hash])
        }
        if let limitReset = update.limitReset {
            try db.cachedStatement(sql: "UPDATE api_keys SET limit_reset = ? WHERE hash = ?").execute(arguments: [limitReset, hash])
        }
        if let region = update.region {
            try db.cachedStatement(sql: "UPDATE api_keys SET region = ? WHERE hash = ?").execute(arguments: [region, hash])
        }
        return try key(db, hash: hash)
    }

    public func setRegion(account: String, region: String?) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(sql: "UPDATE accounts SET region = ? WHERE id = ? AND is_system = 0").execute(arguments: [
                region, account,
            ])
            return db.changesCount > 0
        }
    }

    public func setRegion(keyHash: String, region: String?) async throws -> KeyRecord? {
        try await write { db in try Self.update(db, keyHash: keyHash, KeyUpdate(region: .some(region))) }
    }

    public func deleteKey(hash: String) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(sql: "DELETE FROM api_keys WHERE hash = ?").execute(arguments: [hash])
            return db.changesCount > 0
        }
    }

    public func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(sql: "UPDATE api_keys SET disabled = ? WHERE id = ?").execute(arguments: [disabled, id])
            return db.changesCount > 0
        }
    }

    public func keyUsage(keyID: String, now: Date) async throws -> KeyUsage {
        let windows = UsageWindows(now: now)
        return try await database.read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT COALESCE(SUM(amount), 0) AS total,
                      COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS daily,
                      COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS weekly,
                      COALESCE(SUM(CASE WHEN created_at >= ? THEN amount END), 0) AS monthly
                    FROM transfers WHERE key_id = ? AND kind = 'charge'
                    """, arguments: [Self.millis(windows.day), Self.millis(windows.week), Self.millis(windows.month), keyID])
            func money(_ name: String) -> Money { Money(nanos: row?[name] ?? 0) }
            return KeyUsage(total: money("total"), daily: money("daily"), weekly: money("weekly"), monthly: money("monthly"))
        }
    }
}
