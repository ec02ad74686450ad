import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Settlement

    @discardableResult
    public func settle(_ batch: [Settlement]) async throws -> SettlementResult {
        guard !batch.isEmpty else { return SettlementResult() }
        for transfer in batch.flatMap(\.transfers) where !transfer.hasValidAmount { throw LedgerError.invalidAmount(transfer.amount) }
        try await requireAccounts(batch.flatMap { $0.transfers.flatMap { [$0.debitAccount, $0.creditAccount] } })
        if try await settleInOneStatement(batch) { return SettlementResult() }
        let logger = self.logger
        return try await transaction { connection in
            var deltas = BalanceDeltas()
            let result = try await Self.settleBatch(connection, batch, deltas: &deltas, logger: logger)
            try await deltas.apply(connection, logger: logger)
            return result
        }
    }

    /// The common case in one round trip (`signalbox_settle_rows`); false when the batch needs
    /// the general path (replays, expired leases, settlements with no lease, taken-over claims).
    func settleInOneStatement(_ batch: [Settlement]) async throws -> Bool {
        var seen = Set<String>()
        guard batch.allSatisfy({ seen.insert($0.generation.id).inserted }) else { return false }
        for settlement in batch {
            switch settlement.reservation {
            case .lease?: continue
            case nil: if settlement.transfers.contains(where: { !Billing.SystemAccount.isSystem($0.debitAccount) }) { return false }
            }
        }
        // An optional text that is present but empty would be stored as NULL here (see
        // `SettleRows`); the general path keeps it as it is.
        guard SettleRows.canCarry(batch) else { return false }
        let bindings = SettleRows(batch, createdAt: Self.millis(Date())).bindings
        var attempt = 0
        while true {
            attempt += 1
            do {
                let rows = try await Self.rows(
                    client.query(
                        PostgresQuery(unsafeSQL: SettleRows.statement, binds: bindings),
                        logger: logger))
                return try rows.first?["outcome"].decode(String.self) == "ok"
            } catch let error as PSQLError {
                // Undone: a replay (a unique index refused a row) or a lease no longer open is the general path's.
                if error.serverInfo?[.message] == "signalbox:slow" || error.serverInfo?[.sqlState] == "23505" { return false }
                if attempt < conflictRetries, let state = error.serverInfo?[.sqlState], ["40001", "40P01"].contains(state) { continue }
                if let mapped = Self.ledgerError(error) { throw mapped }
                throw error
            }
        }
    }

    /// A batch in a handful of statements, whatever its size: each kind of row goes in with one
    /// statement over a JSON array of rows (`json_to_recordset`), instead of one statement per
    /// settlement. Per-request holds and idempotency claims (rare on the lease path) go one by one.
    static func settleBatch(
        _ connection: PostgresConnection, _ batch: [Settlement], deltas: inout BalanceDeltas,
        logger: Logger
    ) async throws -> SettlementResult {
        var result = SettlementResult()
        // 1. Generation records; a settlement whose record is already there is a replay, skipped whole.
        var seen = Set<String>()
        var unique = batch.filter { seen.insert($0.generation.id).inserted }
        // 0. Fencing: a claim another request took over is not this settlement's to close or charge for.
        let claims = unique.compactMap { settlement in settlement.idempotency.map { ($0.account, $0.key) } }
        if !claims.isEmpty {
            var owners: [String: String] = [:]
            for row in try await rows(
                connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            SELECT i.account_id, i.key, i.generation_id FROM idempotent_requests i
                            JOIN json_to_recordset($1::json) AS c(account_id TEXT, key TEXT) ON c.account_id = i.account_id AND c.key = i.key
                            ORDER BY i.account_id, i.key FOR UPDATE OF i
                            """, binds: jsonRows(claims.map { ["account_id": .string($0.0), "key": .string($0.1)] })), logger: logger))
            {
                owners[try row["account_id"].decode(String.self) + "\u{0}" + row["key"].decode(String.self)] = try row["generation_id"]
                    .decode(String.self)
            }
            // A claim taken over, or gone (taken over, then released by the request that took it).
            for index in unique.indices {
                guard let outcome = unique[index].idempotency,
                    owners[outcome.account + "\u{0}" + outcome.key] != unique[index].generation.id
                else { continue }
                unique[index] = unique[index].refusingCharges()
            }
        }
        let stored = try await rows(
            connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO generations (id, account_id, key_id, model, provider_name, provider_tag, upstream_id, streamed, cancelled,
                          finish_reason, native_finish_reason, tokens_prompt, tokens_completion, tokens_cached, tokens_cache_write,
                          tokens_reasoning, cost, latency_ms, generation_time_ms, attempts, created_at)
                        SELECT * FROM json_to_recordset($1::json) AS g(id TEXT, account_id TEXT, key_id TEXT, model TEXT, provider_name TEXT,
                          provider_tag TEXT, upstream_id TEXT, streamed BOOLEAN, cancelled BOOLEAN, finish_reason TEXT, native_finish_reason TEXT,
                          tokens_prompt BIGINT, tokens_completion BIGINT, tokens_cached BIGINT, tokens_cache_write BIGINT,
                          tokens_reasoning BIGINT, cost BIGINT, latency_ms BIGINT, generation_time_ms BIGINT, attempts TEXT, created_at BIGINT)
                        ON CONFLICT (id) DO NOTHING RETURNING id
                        """, binds: jsonRows(unique.map { generationRow($0.generation) })), logger: logger))
        let fresh = Set(try stored.map { try $0["id"].decode(String.self) })
        var settlements = unique.filter { fresh.contains($0.generation.id) }
        guard !settlements.isEmpty else { return result }

        // 2. Reservations: lease releases summed per lease, in one statement that locks the leases in id order.
        var releases: [String: Int64] = [:]
        var unbacked = Set<String>()  // generation ids whose reservation expired before they settled
        for settlement in settlements {
            switch settlement.reservation {
            case .lease(let id, let release)?:
                releases[id, default: 0] += max(0, release.nanos)
            case nil:
                unbacked.insert(settlement.generation.id)
            }
        }
        if !releases.isEmpty {
            let released = try await rows(
                connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            WITH r AS (SELECT * FROM json_to_recordset($1::json) AS r(id TEXT, release BIGINT)),
                            locked AS (SELECT h.id, h.amount FROM holds h JOIN r ON r.id = h.id WHERE h.status = 'pending'
                                       ORDER BY h.id FOR UPDATE OF h)
                            UPDATE holds h SET amount = h.amount - LEAST(h.amount, r.release) FROM r, locked l
                            WHERE h.id = r.id AND l.id = h.id
                            RETURNING h.id, h.account_id, l.amount - h.amount AS released
                            """,
                        binds: jsonRows(releases.sorted { $0.key < $1.key }.map { ["id": .string($0.key), "release": .int($0.value)] })),
                    logger: logger))
            var open = Set<String>()
            for row in released {
                open.insert(try row["id"].decode(String.self))
                try deltas.add(try row["account_id"].decode(String.self), held: -(try row["released"].decode(Int64.self)))
            }
            for settlement in settlements {
                if case .lease(let id, _)? = settlement.reservation, !open.contains(id) { unbacked.insert(settlement.generation.id) }
            }
        }
        // A settlement whose reservation expired: the customer pays only what it still has
        // available, the operator the rest (`Settlement.coveringShortfall`).
        if !unbacked.isEmpty {
            let payers = Set(settlements.filter { unbacked.contains($0.generation.id) }.flatMap(\.transfers).map(\.debitAccount))
                .filter { !Billing.SystemAccount.isSystem($0) }
            // Every balance row this batch will change, locked now in one statement in account
            // order — as the one-statement path and every other writer lock them — so reading the
            // payers first can never wait on a batch that holds a row later in the order.
            let touched = Set(settlements.flatMap { $0.transfers.flatMap { [$0.debitAccount, $0.creditAccount] } })
                .union(deltas.changes.keys).union(payers.isEmpty ? [] : [Billing.SystemAccount.overage]).sorted()
            var available: [String: Money] = [:]
            for row in try await rows(
                connection.query(
                    "SELECT account_id, balance, held FROM balances WHERE account_id = ANY(\(touched)) ORDER BY account_id FOR UPDATE",
                    logger: logger))
            {
                let account = try row["account_id"].decode(String.self)
                guard payers.contains(account) else { continue }
                let pending = deltas.changes[account] ?? (0, 0)
                available[account] = Money(
                    nanos: try row["balance"].decode(Int64.self) + pending.balance
                        - row["held"].decode(Int64.self) - pending.held)
            }
            for index in settlements.indices where unbacked.contains(settlements[index].generation.id) {
                settlements[index] = settlements[index].coveringShortfall(available: &available)
                let (id, cost) = (settlements[index].generation.id, settlements[index].generation.cost.nanos)
                try await connection.query("UPDATE generations SET cost = \(cost) WHERE id = \(id)", logger: logger)
                switch settlements[index].reservation {
                case .lease(let id, _)?: result.closedReservations.insert(id)
                case nil: break
                }
            }
        }

        // 3. Transfers; one whose idempotency key is already posted must be the same transfer.
        let transfers = settlements.flatMap(\.transfers)
        if !transfers.isEmpty {
            let now = millis(Date())
            let inserted = try await rows(
                connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
                            SELECT * FROM json_to_recordset($1::json) AS t(idempotency_key TEXT, debit_account TEXT, credit_account TEXT,
                              amount BIGINT, kind TEXT, key_id TEXT, generation_id TEXT, memo TEXT, created_at BIGINT)
                            ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key
                            """, binds: jsonRows(transfers.map { transferRow($0, createdAt: now) })), logger: logger))
            let posted = Set(try inserted.map { try $0["idempotency_key"].decode(String.self) })
            for transfer in transfers {
                if posted.contains(transfer.idempotencyKey) {
                    try deltas.add(transfer.debitAccount, balance: -transfer.amount.nanos)
                    try deltas.add(transfer.creditAccount, balance: transfer.amount.nanos)
                } else {
                    var replay = BalanceDeltas()
                    try await post(connection, transfer, deltas: &replay, logger: logger)  // checks it is the same
                    for (account, change) in replay.changes {
                        try deltas.add(account, balance: change.balance, held: change.held)
                    }
                }
            }
        }

        // 4. Idempotency claims.
        for settlement in settlements {
            switch settlement.idempotency {
            case .completed(let account, let key, let response)?:
                let owner = settlement.generation.id
                try await connection.query(
                    """
                    UPDATE idempotent_requests SET status = 'done', response = \(response)
                    WHERE account_id = \(account) AND key = \(key) AND generation_id = \(owner)
                    """, logger: logger)
            case .released(let account, let key)?:
                let owner = settlement.generation.id
                try await connection.query(
                    """
                    DELETE FROM idempotent_requests WHERE account_id = \(account) AND key = \(key) AND generation_id = \(owner)
                      AND status = 'pending'
                    """, logger: logger)
            case nil:
                break
            }
        }
        return result
    }

    static func jsonRows(_ rows: [JSONObject]) -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(JSONWriter.string(.array(rows.map { .object($0) })))
        return bindings
    }

    static func text(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }

    static func generationRow(_ g: GenerationRecord) -> JSONObject {
        let attempts = AttemptRecord.json(g.attempts)
        return [
            "id": .string(g.id), "account_id": .string(g.accountID), "key_id": text(g.keyID), "model": .string(g.model),
            "provider_name": text(g.providerName), "provider_tag": text(g.providerTag), "upstream_id": text(g.upstreamID),
            "streamed": .bool(g.streamed), "cancelled": .bool(g.cancelled), "finish_reason": text(g.finishReason),
            "native_finish_reason": text(g.nativeFinishReason), "tokens_prompt": .int(Int64(g.usage.promptTokens)),
            "tokens_completion": .int(Int64(g.usage.completionTokens)), "tokens_cached": .int(Int64(g.usage.cachedTokens)),
            "tokens_cache_write": .int(Int64(g.usage.cacheWriteTokens)), "tokens_reasoning": .int(Int64(g.usage.reasoningTokens)),
            "cost": .int(g.cost.nanos), "latency_ms": .int(Int64(g.latencyMs)), "generation_time_ms": .int(Int64(g.generationTimeMs)),
            "attempts": .string(attempts), "created_at": .int(millis(g.createdAt)),
        ]
    }

    static func transferRow(_ t: TransferRequest, createdAt: Int64) -> JSONObject {
        [
            "idempotency_key": .string(t.idempotencyKey), "debit_account": .string(t.debitAccount),
            "credit_account": .string(t.creditAccount), "amount": .int(t.amount.nanos), "kind": .string(t.kind.rawValue),
            "key_id": text(t.keyID), "generation_id": text(t.generationID), "memo": text(t.memo), "created_at": .int(createdAt),
        ]
    }
}

/// A settlement batch as `signalbox_settle_rows` takes it: one array per column, in the
/// function's parameter order. An absent optional text is '' (the function stores NULL):
/// PostgresNIO's array encoder has no NULL element, so a batch with a present-but-empty
/// optional text goes to the general path instead (`canCarry`).
struct SettleRows {
    static let parameterCount = 37
    static let statement =
        "SELECT signalbox_settle_rows("
        + (1...parameterCount).map { "$\($0)" }.joined(separator: ", ") + ") AS outcome"

    private(set) var bindings = PostgresBindings(capacity: parameterCount)

    /// Whether every optional text in `batch` is absent or non-empty, so '' can stand for NULL.
    static func canCarry(_ batch: [Settlement]) -> Bool {
        func fits(_ value: String?) -> Bool { value.map { !$0.isEmpty } ?? true }
        return batch.allSatisfy { settlement in
            let g = settlement.generation
            return [g.keyID, g.providerName, g.providerTag, g.upstreamID, g.finishReason, g.nativeFinishReason].allSatisfy(fits)
                && settlement.transfers.allSatisfy { [$0.keyID, $0.generationID, $0.memo].allSatisfy(fits) }
        }
    }

    init(_ batch: [Settlement], createdAt: Int64) {
        let generations = batch.map(\.generation)
        let transfers = batch.flatMap(\.transfers)
        var releases: [String: Int64] = [:]
        var claims: [(account: String, key: String, generation: String, response: String?)] = []
        for settlement in batch {
            if case .lease(let id, let release)? = settlement.reservation { releases[id, default: 0] += max(0, release.nanos) }
            switch settlement.idempotency {
            case .completed(let account, let key, let response)?: claims.append((account, key, settlement.generation.id, response))
            case .released(let account, let key)?: claims.append((account, key, settlement.generation.id, nil))
            case nil: break
            }
        }
        let leases = releases.sorted { $0.key < $1.key }
        func text(_ value: String?) -> String { value ?? "" }

        bindings.append(generations.map(\.id))
        bindings.append(generations.map(\.accountID))
        bindings.append(generations.map { text($0.keyID) })
        bindings.append(generations.map(\.model))
        bindings.append(generations.map { text($0.providerName) })
        bindings.append(generations.map { text($0.providerTag) })
        bindings.append(generations.map { text($0.upstreamID) })
        bindings.append(generations.map(\.streamed))
        bindings.append(generations.map(\.cancelled))
        bindings.append(generations.map { text($0.finishReason) })
        bindings.append(generations.map { text($0.nativeFinishReason) })
        bindings.append(generations.map { Int64($0.usage.promptTokens) })
        bindings.append(generations.map { Int64($0.usage.completionTokens) })
        bindings.append(generations.map { Int64($0.usage.cachedTokens) })
        bindings.append(generations.map { Int64($0.usage.cacheWriteTokens) })
        bindings.append(generations.map { Int64($0.usage.reasoningTokens) })
        bindings.append(generations.map(\.cost.nanos))
        bindings.append(generations.map { Int64($0.latencyMs) })
        bindings.append(generations.map { Int64($0.generationTimeMs) })
        bindings.append(generations.map { AttemptRecord.json($0.attempts) })
        bindings.append(generations.map { PostgresLedgerStore.millis($0.createdAt) })

        bindings.append(transfers.map(\.idempotencyKey))
        bindings.append(transfers.map(\.debitAccount))
        bindings.append(transfers.map(\.creditAccount))
        bindings.append(transfers.map(\.amount.nanos))
        bindings.append(transfers.map(\.kind.rawValue))
        bindings.append(transfers.map { text($0.keyID) })
        bindings.append(transfers.map { text($0.generationID) })
        bindings.append(transfers.map { text($0.memo) })
        bindings.append(createdAt)

        bindings.append(leases.map(\.key))
        bindings.append(leases.map(\.value))

        bindings.append(claims.map(\.account))
        bindings.append(claims.map(\.key))
        bindings.append(claims.map(\.generation))
        bindings.append(claims.map { $0.response != nil })
        bindings.append(claims.map { text($0.response) })
    }
}
