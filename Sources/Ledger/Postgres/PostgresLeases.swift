import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Leases

    public func growLease(_ request: LeaseRequest) async throws -> LeaseGrant {
        let logger = self.logger
        return try await transaction { connection in
            // Lock order: the lease's hold row, then the balance row (as settlements do).
            let existing = try await Self.rows(
                connection.query(
                    "SELECT amount, status FROM holds WHERE id = \(request.id) FOR UPDATE", logger: logger)
            ).first
            if let existing, try existing["status"].decode(String.self) != HoldStatus.pending.rawValue { return .closed }
            guard
                let row = try await Self.rows(
                    connection.query(
                        "SELECT balance, held FROM balances WHERE account_id = \(request.account) FOR UPDATE", logger: logger)
                ).first
            else { throw LedgerError.unknownAccount(request.account) }
            let available = Money(nanos: try row["balance"].decode(Int64.self) - row["held"].decode(Int64.self))
            guard let grant = request.grant(available: available) else { return .insufficient(available: available) }
            let ttl = Int64(request.ttl * 1000)
            if existing == nil {
                let now = Self.millis(Date())
                try await connection.query(
                    """
                    INSERT INTO holds (id, account_id, amount, status, key_id, expires_at, created_at)
                    VALUES (\(request.id), \(request.account), \(grant.nanos), 'pending', NULL, \(unescaped: Self.databaseNow) + \(ttl), \(now))
                    """, logger: logger)
            } else {
                try await connection.query(
                    """
                    UPDATE holds SET amount = amount + \(grant.nanos), expires_at = \(unescaped: Self.databaseNow) + \(ttl)
                    WHERE id = \(request.id)
                    """, logger: logger)
            }
            try await connection.query(
                "UPDATE balances SET held = held + \(grant.nanos) WHERE account_id = \(request.account)", logger: logger)
            let before = try existing?["amount"].decode(Int64.self) ?? 0
            return .granted(added: grant, total: Money(nanos: before + grant.nanos))
        }
    }

    public func shrinkLease(id: String, by amount: Money, ttl: TimeInterval, close: Bool) async throws -> Money? {
        let logger = self.logger
        return try await transaction { connection in
            var deltas = BalanceDeltas()
            guard var left = try await Self.shrinkLease(connection, id: id, by: amount, deltas: &deltas, logger: logger) else {
                return nil
            }
            if close {
                try await Self.closeHold(connection, id: id, status: .voided, deltas: &deltas, logger: logger)
                left = .zero
            } else {
                let ttl = Int64(ttl * 1000)
                try await connection.query(
                    "UPDATE holds SET expires_at = \(unescaped: Self.databaseNow) + \(ttl) WHERE id = \(id)", logger: logger)
            }
            try await deltas.apply(connection, logger: logger)
            return left
        }
    }

    /// The database's clock in milliseconds: every node compares claim and lease times with it,
    /// never with its own.
    static let databaseNow = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    public func openLeaseAmount(id: String) async throws -> Money? {
        try await Self.rows(client.query("SELECT amount FROM holds WHERE id = \(id) AND status = 'pending'", logger: logger)).first
            .map { Money(nanos: try $0["amount"].decode(Int64.self)) }
    }

    public func returnLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int {
        let logger = self.logger
        let (prefix, before) = ("lease:\(nodeID):", Self.millis(createdBefore))
        return try await transaction { connection in
            let ids = try await Self.rows(
                connection.query(
                    """
                    SELECT id FROM holds WHERE status = 'pending' AND starts_with(id, \(prefix)) AND created_at < \(before)
                    ORDER BY id FOR UPDATE SKIP LOCKED
                    """, logger: logger)
            ).map { try $0["id"].decode(String.self) }
            var deltas = BalanceDeltas()
            for id in ids { try await Self.closeHold(connection, id: id, status: .voided, deltas: &deltas, logger: logger) }
            try await deltas.apply(connection, logger: logger)
            return ids.count
        }
    }

    public func expireLeases() async throws -> Int {
        let logger = self.logger
        return try await transaction { connection in
            let ids = try await Self.rows(
                connection.query(
                    "SELECT id FROM holds WHERE status = 'pending' AND expires_at < \(unescaped: Self.databaseNow) FOR UPDATE SKIP LOCKED",
                    logger: logger)
            )
            .map { try $0["id"].decode(String.self) }
            var deltas = BalanceDeltas()
            for id in ids { try await Self.closeHold(connection, id: id, status: .voided, deltas: &deltas, logger: logger) }
            try await deltas.apply(connection, logger: logger)
            return ids.count
        }
    }
}
