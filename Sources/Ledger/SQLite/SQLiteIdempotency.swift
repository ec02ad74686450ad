import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Idempotency claims

    public func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim {
        try await write { db in
            let now = Self.millis(Date())
            if let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM idempotent_requests WHERE account_id = ? AND key = ?"),
                arguments: [request.account, request.key])
            {
                let owner: String = row["generation_id"]
                if owner == request.generationID { return .claimed }
                if let fingerprint: String = row["fingerprint"], fingerprint != request.fingerprint { return .reused(generationID: owner) }
                if row["status"] as String == "done" { return .completed(generationID: owner, response: row["response"] ?? "") }
                let renewed: Int64 = row["renewed_at"] ?? row["created_at"]
                if renewed > now - Int64(request.staleAfter * 1000) { return .inProgress(generationID: owner) }
            }
            try db.cachedStatement(
                sql: """
                    INSERT INTO idempotent_requests (account_id, key, generation_id, status, created_at, fingerprint, renewed_at)
                    VALUES (?, ?, ?, 'pending', ?, ?, ?)
                    ON CONFLICT (account_id, key) DO UPDATE SET generation_id = excluded.generation_id, renewed_at = excluded.renewed_at,
                      fingerprint = excluded.fingerprint
                    """
            ).execute(arguments: [request.account, request.key, request.generationID, now, request.fingerprint, now])
            return .claimed
        }
    }

    public func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(
                sql: """
                    UPDATE idempotent_requests SET renewed_at = ? WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'
                    """
            ).execute(arguments: [Self.millis(Date()), account, key, generationID])
            return db.changesCount > 0
        }
    }

    public func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws {
        try await write { db in
            try db.cachedStatement(
                sql: "DELETE FROM idempotent_requests WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'"
            )
            .execute(arguments: [account, key, generationID])
        }
    }
}
