import Foundation
import Logging
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Audited changes and the audit trail

    public func perform(_ change: AdminChange, by actor: AuditActor) async throws -> AdminOutcome {
        switch change {
        case .createKey(let key): try await requireAccounts([key.accountID])
        case .post(_, let account, let transfers):
            try await requireAccounts([account] + transfers.flatMap { [$0.debitAccount, $0.creditAccount] })
        default: break
        }
        let logger = self.logger
        return try await transaction { connection in
            var applied = try await Self.apply(change, connection, logger: logger)
            if applied.changed, let (action, target, before, after) = applied.pendingAudit {
                applied.audit = try await Self.insertAudit(
                    connection, AuditEntry(actor, action: action, target: target, before: before, after: after), logger: logger)
            }
            return applied.result
        }
    }

    @discardableResult
    public func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry {
        let logger = self.logger
        return try await transaction { connection in try await Self.insertAudit(connection, entry, logger: logger) }
    }

    public func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry] {
        let (conditions, values) = query.conditions { "$\($0)" }
        let sql = """
            SELECT id, created_at, actor, role, action, target, before_state, after_state, node, source_address FROM audit_log
            WHERE \(conditions) ORDER BY id DESC LIMIT \(max(0, query.limit))
            """
        return try await Self.rows(client.query(try Self.query(sql, values), logger: logger)).map { row in
            AuditEntry(
                id: try row["id"].decode(Int64.self), createdAt: Self.date(try row["created_at"].decode(Int64.self)),
                actor: try row["actor"].decode(String.self),
                role: try row["role"].decode(String?.self).flatMap(AdminRole.init(rawValue:)),
                action: AuditAction(rawValue: try row["action"].decode(String.self)) ?? .keyUpdated,
                target: try row["target"].decode(String.self),
                before: AuditSnapshot.value(try row["before_state"].decode(String?.self)),
                after: AuditSnapshot.value(try row["after_state"].decode(String?.self)), node: try row["node"].decode(String.self),
                sourceAddress: try row["source_address"].decode(String?.self))
        }
    }

    public func roleMappings() async throws -> [RoleMapping] {
        try await Self.rows(client.query("SELECT claim, value, role FROM role_mappings ORDER BY claim, value", logger: logger))
            .compactMap { row in
                guard let claim = RoleMapping.Claim(rawValue: try row["claim"].decode(String.self)),
                    let role = AdminRole(rawValue: try row["role"].decode(String.self))
                else { return nil }
                return RoleMapping(claim: claim, value: try row["value"].decode(String.self), role: role)
            }
    }

    public func accounts(_ query: AccountQuery) async throws -> [AccountSummary] {
        var clauses = ["NOT a.is_system"]
        var values: [EntryQuery.Value] = []
        if let pattern = query.likePattern {
            values.append(.text(pattern))
            clauses.append("(lower(a.id) LIKE $\(values.count) ESCAPE '\\' OR lower(a.name) LIKE $\(values.count) ESCAPE '\\')")
        }
        if let after = query.after {
            values.append(.text(after))
            clauses.append("a.id > $\(values.count)")
        }
        let sql = """
            SELECT a.id, a.name, a.is_system, a.created_at, a.region, b.balance, b.held,
              (SELECT COUNT(*) FROM holds h WHERE h.account_id = a.id AND h.status = 'pending')::BIGINT AS open_leases
            FROM accounts a JOIN balances b ON b.account_id = a.id
            WHERE \(clauses.joined(separator: " AND ")) ORDER BY a.id LIMIT \(max(0, query.limit))
            """
        return try await Self.rows(client.query(try Self.query(sql, values), logger: logger)).map { row in
            AccountSummary(
                account: try Self.account(row), balance: Money(nanos: try row["balance"].decode(Int64.self)),
                held: Money(nanos: try row["held"].decode(Int64.self)), openLeases: Int(try row["open_leases"].decode(Int64.self)))
        }
    }

    static func account(_ row: PostgresRandomAccessRow) throws -> Account {
        Account(
            id: try row["id"].decode(String.self), name: try row["name"].decode(String.self),
            isSystem: try row["is_system"].decode(Bool.self), createdAt: date(try row["created_at"].decode(Int64.self)),
            region: try row["region"].decode(String?.self))
    }

    static func insertAudit(_ connection: PostgresConnection, _ entry: AuditEntry, logger: Logger) async throws -> AuditEntry {
        var entry = entry
        let (before, after) = (AuditSnapshot.text(entry.before), AuditSnapshot.text(entry.after))
        entry.id = try await int(
            connection.query(
                """
                INSERT INTO audit_log (created_at, actor, role, action, target, before_state, after_state, node, source_address)
                VALUES (\(millis(entry.createdAt)), \(entry.actor), \(entry.role?.rawValue), \(entry.action.rawValue), \(entry.target),
                        \(before), \(after), \(entry.node), \(entry.sourceAddress))
                RETURNING id
                """, logger: logger))
        return entry
    }

    static func account(_ connection: PostgresConnection, id: String, logger: Logger) async throws -> Account? {
        try await rows(
            connection.query("SELECT id, name, is_system, created_at, region FROM accounts WHERE id = \(id) FOR UPDATE", logger: logger)
        ).first.map(account)
    }

    static func balanceNanos(_ connection: PostgresConnection, _ account: String, logger: Logger) async throws -> Int64 {
        try await rows(connection.query("SELECT balance FROM balances WHERE account_id = \(account)", logger: logger)).first
            .map { try $0["balance"].decode(Int64.self) } ?? 0
    }

    /// Runs one change inside the caller's transaction.
    static func apply(_ change: AdminChange, _ connection: PostgresConnection, logger: Logger) async throws -> AppliedChange {
        switch change {
        case .createAccount(let id, let name, let region):
            if let existing = try await account(connection, id: id, logger: logger) {
                return AppliedChange(changed: false, account: existing)
            }
            try await ensureAccount(connection, id: id, name: name, isSystem: false, logger: logger)
            if let region { try await connection.query("UPDATE accounts SET region = \(region) WHERE id = \(id)", logger: logger) }
            guard let created = try await account(connection, id: id, logger: logger) else { throw LedgerError.unknownAccount(id) }
            return AppliedChange(changed: true, account: created, audit: (.accountCreated, id, nil, AuditSnapshot.account(created)))
        case .pinAccount(let id, let region):
            guard let before = try await account(connection, id: id, logger: logger), !before.isSystem else {
                return AppliedChange(changed: false, found: false)
            }
            guard before.region != region else { return AppliedChange(changed: false, account: before) }
            try await connection.query("UPDATE accounts SET region = \(region) WHERE id = \(id)", logger: logger)
            var after = before
            after.region = region
            return AppliedChange(
                changed: true, account: after, audit: (.accountPinned, id, AuditSnapshot.account(before), AuditSnapshot.account(after)))
        case .createKey(let key):
            guard try await insertKey(connection, key, logger: logger) else {
                return AppliedChange(changed: false, key: try await self.key(connection, hash: key.hash, logger: logger))
            }
            let stored = try await self.key(connection, hash: key.hash, logger: logger)
            return AppliedChange(changed: true, key: stored, audit: (.keyCreated, key.id, nil, stored.map(AuditSnapshot.key)))
        case .updateKey(let hash, let update):
            guard let before = try await key(connection, hash: hash, lock: true, logger: logger) else {
                return AppliedChange(changed: false, found: false)
            }
            guard let after = try await self.update(connection, keyHash: hash, update, logger: logger), after != before else {
                return AppliedChange(changed: false, key: before)
            }
            return AppliedChange(
                changed: true, key: after, audit: (update.action, after.id, AuditSnapshot.key(before), AuditSnapshot.key(after)))
        case .deleteKey(let hash):
            guard let before = try await key(connection, hash: hash, lock: true, logger: logger) else {
                return AppliedChange(changed: false, found: false)
            }
            try await connection.query("DELETE FROM api_keys WHERE hash = \(hash)", logger: logger)
            return AppliedChange(changed: true, key: before, audit: (.keyDeleted, before.id, AuditSnapshot.key(before), nil))
        case .post(let action, let accountID, let transfers):
            let before = try await balanceNanos(connection, accountID, logger: logger)
            var deltas = BalanceDeltas()
            var recorded = 0
            for transfer in transfers where try await post(connection, transfer, deltas: &deltas, logger: logger) { recorded += 1 }
            try await deltas.apply(connection, logger: logger)
            guard recorded > 0 else { return AppliedChange(changed: false) }
            let after = AuditSnapshot.transfers(transfers, balance: try await balanceNanos(connection, accountID, logger: logger))
            return AppliedChange(changed: true, recorded: recorded, audit: (action, accountID, AuditSnapshot.balance(before), after))
        case .setRoleMapping(let claim, let value, let role):
            let old = try await rows(
                connection.query(
                    "SELECT role FROM role_mappings WHERE claim = \(claim.rawValue) AND value = \(value) FOR UPDATE", logger: logger)
            ).first.flatMap { AdminRole(rawValue: try $0["role"].decode(String.self)) }
            guard old != role else { return AppliedChange(changed: false) }
            if let role {
                try await connection.query(
                    """
                    INSERT INTO role_mappings (claim, value, role) VALUES (\(claim.rawValue), \(value), \(role.rawValue))
                    ON CONFLICT (claim, value) DO UPDATE SET role = EXCLUDED.role
                    """, logger: logger)
            } else {
                try await connection.query("DELETE FROM role_mappings WHERE claim = \(claim.rawValue) AND value = \(value)", logger: logger)
            }
            let target = RoleMapping(claim: claim, value: value, role: role ?? .auditor).target
            return AppliedChange(changed: true, audit: (.roleMappingChanged, target, AuditSnapshot.role(old), AuditSnapshot.role(role)))
        }
    }
}
