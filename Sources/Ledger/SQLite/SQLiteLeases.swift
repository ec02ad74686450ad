import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Leases

    public func growLease(_ request: LeaseRequest) async throws -> LeaseGrant {
        try await write { db in
            let existing = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT amount, status FROM holds WHERE id = ?"), arguments: [request.id])
            if let existing, existing["status"] as String != HoldStatus.pending.rawValue { return .closed }
            guard
                let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"),
                    arguments: [request.account])
            else {
                throw LedgerError.unknownAccount(request.account)
            }
            let available = Money(nanos: (row["balance"] as Int64) - (row["held"] as Int64))
            guard let grant = request.grant(available: available) else { return .insufficient(available: available) }
            let expires = Self.expiry(request.ttl)
            if existing == nil {
                try db.cachedStatement(
                    sql: """
                        INSERT INTO holds (id, account_id, amount, status, key_id, expires_at, created_at) VALUES (?, ?, ?, 'pending', NULL, ?, ?)
                        """
                ).execute(arguments: [request.id, request.account, grant.nanos, expires, Self.millis(Date())])
            } else {
                try db.cachedStatement(sql: "UPDATE holds SET amount = amount + ?, expires_at = ? WHERE id = ?")
                    .execute(arguments: [grant.nanos, expires, request.id])
            }
            try db.cachedStatement(sql: "UPDATE balances SET held = held + ? WHERE account_id = ?").execute(arguments: [
                grant.nanos, request.account,
            ])
            let total = (existing?["amount"] as Int64? ?? 0) + grant.nanos
            return .granted(added: grant, total: Money(nanos: total))
        }
    }

    public func shrinkLease(id: String, by amount: Money, ttl: TimeInterval, close: Bool) async throws -> Money? {
        try await write { db in
            guard let left = try Self.shrinkLease(db, id: id, by: amount) else { return nil }
            if close {
                try Self.closeHold(db, id: id, status: .voided)
                return .zero
            }
            try db.cachedStatement(sql: "UPDATE holds SET expires_at = ? WHERE id = ?").execute(arguments: [Self.expiry(ttl), id])
            return left
        }
    }

    public func openLeaseAmount(id: String) async throws -> Money? {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT amount FROM holds WHERE id = ? AND status = 'pending'"), arguments: [id])
                .map(Money.init(nanos:))
        }
    }

    public func returnLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int {
        try await write { db in
            let ids = try String.fetchAll(
                db.cachedStatement(
                    sql: """
                        SELECT id FROM holds WHERE status = 'pending' AND substr(id, 1, ?) = ? AND created_at < ?
                        """), arguments: ["lease:\(nodeID):".count, "lease:\(nodeID):", Self.millis(createdBefore)])
            for id in ids { try Self.closeHold(db, id: id, status: .voided) }
            return ids.count
        }
    }

    public func expireLeases() async throws -> Int {
        try await write { db in
            let ids = try String.fetchAll(
                db.cachedStatement(sql: "SELECT id FROM holds WHERE status = 'pending' AND expires_at < ?"),
                arguments: [Self.millis(Date())])
            for id in ids { try Self.closeHold(db, id: id, status: .voided) }
            return ids.count
        }
    }
}
