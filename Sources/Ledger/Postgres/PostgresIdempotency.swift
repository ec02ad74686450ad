import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Idempotency claims

    public func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim {
        let logger = self.logger
        return try await transaction { connection in
            try await connection.query(
                """
                INSERT INTO idempotent_requests (account_id, key, generation_id, status, created_at, fingerprint, renewed_at)
                VALUES (\(request.account), \(request.key), \(request.generationID), 'pending', \(unescaped: Self.databaseNow),
                        \(request.fingerprint), \(unescaped: Self.databaseNow))
                ON CONFLICT DO NOTHING
                """, logger: logger)
            guard
                let row = try await Self.rows(
                    connection.query(
                        """
                        SELECT generation_id, status, response, fingerprint,
                          COALESCE(renewed_at, created_at) < \(unescaped: Self.databaseNow) - \(Int64(request.staleAfter * 1000)) AS stale
                        FROM idempotent_requests WHERE account_id = \(request.account) AND key = \(request.key) FOR UPDATE
                        """, logger: logger)
                ).first
            else { throw LedgerError.storage("idempotency claim vanished") }
            let owner = try row["generation_id"].decode(String.self)
            if owner == request.generationID { return .claimed }
            if let fingerprint = try row["fingerprint"].decode(String?.self), fingerprint != request.fingerprint {
                return .reused(generationID: owner)
            }
            if try row["status"].decode(String.self) == "done" {
                return .completed(generationID: owner, response: try row["response"].decode(String?.self) ?? "")
            }
            guard try row["stale"].decode(Bool.self) else { return .inProgress(generationID: owner) }
            try await connection.query(
                """
                UPDATE idempotent_requests SET generation_id = \(request.generationID), fingerprint = \(request.fingerprint),
                  renewed_at = \(unescaped: Self.databaseNow)
                WHERE account_id = \(request.account) AND key = \(request.key)
                """, logger: logger)
            return .claimed
        }
    }

    public func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool {
        !(try await Self.rows(
            client.query(
                """
                UPDATE idempotent_requests SET renewed_at = \(unescaped: Self.databaseNow)
                WHERE account_id = \(account) AND key = \(key) AND generation_id = \(generationID) AND status = 'pending' RETURNING 1
                """, logger: logger))).isEmpty
    }

    public func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws {
        try await client.query(
            """
            DELETE FROM idempotent_requests
            WHERE account_id = \(account) AND key = \(key) AND generation_id = \(generationID) AND status = 'pending'
            """, logger: logger)
    }
}
