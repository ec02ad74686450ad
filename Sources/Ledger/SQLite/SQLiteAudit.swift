import Foundation
import GRDB
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Audited changes and the audit trail

    public func perform(_ change: AdminChange, by actor: AuditActor) async throws -> AdminOutcome {
        try await write { db in
            var outcome = try Self.apply(change, db)
            if outcome.changed, let (action, target, before, after) = outcome.pendingAudit {
                outcome.audit = try Self.insertAudit(db, AuditEntry(actor, action: action, target: target, before: before, after: after))
            }
            return outcome.result
        }
    }

    @discardableResult
    public func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry {
        try await write { db in try Self.insertAudit(db, entry) }
    }

    public func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry] {
        let (conditions, values) = query.conditions { _ in "?" }
        return try await database.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM audit_log WHERE \(conditions) ORDER BY id DESC LIMIT ?",
                arguments: Self.arguments(values + [.integer(Int64(max(0, query.limit)))])
            ).map { row in
                AuditEntry(
                    id: row["id"], createdAt: Self.date(row["created_at"]), actor: row["actor"],
                    role: (row["role"] as String?).flatMap(AdminRole.init(rawValue:)),
                    action: AuditAction(rawValue: row["action"]) ?? .keyUpdated, target: row["target"],
                    before: AuditSnapshot.value(row["before_state"]), after: AuditSnapshot.value(row["after_state"]),
                    node: row["node"], sourceAddress: row["source_address"])
            }
        }
    }

    public func roleMappings() async throws -> [RoleMapping] {
        try await database.read { db in
            try Row.fetchAll(db, sql: "SELECT claim, value, role FROM role_mappings ORDER BY claim, value").compactMap { row in
                guard let claim = RoleMapping.Claim(rawValue: row["claim"]), let role = AdminRole(rawValue: row["role"]) else {
                    return nil
                }
                return RoleMapping(claim: claim, value: row["value"], role: role)
            }
        }
    }

    public func accounts(_ query: AccountQuery) async throws -> [AccountSummary] {
        var clauses = ["a.is_system = 0"]
        var values: [EntryQuery.Value] = []
        if let pattern = query.likePattern {
            clauses.append("(lower(a.id) LIKE ? ESCAPE '\\' OR lower(a.name) LIKE ? ESCAPE '\\')")
            values += [.text(pattern), .text(pattern)]
        }
        if let after = query.after {
            clauses.append("a.id > ?")
            values.append(.text(after))
        }
        values.append(.integer(Int64(max(0, query.limit))))
        return try await database.read { [clauses, values] db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT a.*, b.balance, b.held,
                      (SELECT COUNT(*) FROM holds h WHERE h.account_id = a.id AND h.status = 'pending') AS open_leases
                    FROM accounts a JOIN balances b ON b.account_id = a.id
                    WHERE \(clauses.joined(separator: " AND ")) ORDER BY a.id LIMIT ?
                    """, arguments: Self.arguments(values)
            ).map { row in
                AccountSummary(
                    account: Account(
                        id: row["id"], name: row["name"], isSystem: row["is_system"], createdAt: Self.date(row["created_at"]),
                        region: row["region"]),
                    balance: Money(nanos: row["balance"]), held: Money(nanos: row["held"]), openLeases: row["open_leases"])
            }
        }
    }

    static func insertAudit(_ db: Database, _ entry: AuditEntry) throws -> AuditEntry {
        var entry = entry
        try db.cachedStatement(
            sql: """
                INSERT INTO audit_log (created_at, actor, role, action, target, before_state, after_state, node, source_address)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            millis(entry.createdAt), entry.actor, entry.role?.rawValue, entry.action.rawValue, entry.target,
            AuditSnapshot.text(entry.before), AuditSnapshot.text(entry.after), entry.node, entry.sourceAddress,
        ])
        entry.id = db.lastInsertedRowID
        return entry
    }

    static func balanceNanos(_ db: Database, _ account: String) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT balance FROM balances WHERE account_id = ?"), arguments: [account]) ?? 0
    }

    static func account(_ db: Database, id: String) throws -> Account? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM accounts WHERE id = ?"), arguments: [id]).map {
            Account(id: $0["id"], name: $0["name"], isSystem: $0["is_system"], createdAt: date($0["created_at"]), region: $0["region"])
        }
    }

    /// Runs one change inside the caller's transaction.
    static func apply(_ change: AdminChange, _ db: Database) throws -> AppliedChange {
        switch change {
        case .createAccount(let id, let name, let region):
            if let existing = try account(db, id: id) { return AppliedChange(changed: false, account: existing) }
            try ensureAccount(db, id: id, name: name, isSystem: false)
            if let region {
                try db.cachedStatement(sql: "UPDATE accounts SET region = ? WHERE id = ?").execute(arguments: [region, id])
            }
            let created = try account(db, id: id)!
            return AppliedChange(changed: true, account: created, audit: (.accountCreated, id, nil, AuditSnapshot.account(created)))
        case .pinAccount(let id, let region):
            guard let before = try account(db, id: id), !before.isSystem else { return AppliedChange(changed: false, found: false) }
            guard before.region != region else { return AppliedChange(changed: false, account: before) }
            try db.cachedStatement(sql: "UPDATE accounts SET region = ? WHERE id = ?").execute(arguments: [region, id])
            let after = try account(db, id: id)!
            return AppliedChange(
                changed: true, account: after,
                audit: (.accountPinned, id, AuditSnapshot.account(before), AuditSnapshot.account(after)))
        case .createKey(let key):
            guard try insertKey(db, key) else { return AppliedChange(changed: false, key: try self.key(db, hash: key.hash)) }
            let stored = try self.key(db, hash: key.hash)
            return AppliedChange(
                changed: true, key: stored, audit: (.keyCreated, key.id, nil, stored.map(AuditSnapshot.key)))
        case .updateKey(let hash, let update):
            guard let before = try key(db, hash: hash) else { return AppliedChange(changed: false, found: false) }
            guard let after = try self.update(db, keyHash: hash, update), after != before else {
                return AppliedChange(changed: false, key: before)
            }
            return AppliedChange(
                changed: true, key: after, audit: (update.action, after.id, AuditSnapshot.key(before), AuditSnapshot.key(after)))
        case .deleteKey(let hash):
            guard let before = try key(db, hash: hash) else { return AppliedChange(changed: false, found: false) }
            try db.cachedStatement(sql: "DELETE FROM api_keys WHERE hash = ?").execute(arguments: [hash])
            return AppliedChange(changed: true, key: before, audit: (.keyDeleted, before.id, AuditSnapshot.key(before), nil))
        case .post(let action, let accountID, let transfers):
            guard try account(db, id: accountID) != nil else { throw LedgerError.unknownAccount(accountID) }
            let before = try balanceNanos(db, accountID)
            var recorded = 0
            for transfer in transfers where try post(db, transfer) { recorded += 1 }
            guard recorded > 0 else { return AppliedChange(changed: false, recorded: 0) }
            let after = AuditSnapshot.transfers(transfers, balance: try balanceNanos(db, accountID))
            return AppliedChange(changed: true, recorded: recorded, audit: (action, accountID, AuditSnapshot.balance(before), after))
        case .setRoleMapping(let claim, let value, let role):
            let old = try String.fetchOne(
                db.cachedStatement(sql: "SELECT role FROM role_mappings WHERE claim = ? AND value = ?"),
                arguments: [claim.rawValue, value]
            ).flatMap(AdminRole.init(rawValue:))
            guard old != role else { return AppliedChange(changed: false) }
            if let role {
                try db.cachedStatement(
                    sql:
                        "INSERT INTO role_mappings (claim, value, role) VALUES (?, ?, ?) ON CONFLICT(claim, value) DO UPDATE SET role = excluded.role"
                ).execute(arguments: [claim.rawValue, value, role.rawValue])
            } else {
                try db.cachedStatement(sql: "DELETE FROM role_mappings WHERE claim = ? AND value = ?").execute(arguments: [
                    claim.rawValue, value,
                ])
            }
            let target = RoleMapping(claim: claim, value: value, role: role ?? .auditor).target
            return AppliedChange(
                changed: true, audit: (.roleMappingChanged, target, AuditSnapshot.role(old), AuditSnapshot.role(role)))
        }
    }
}
