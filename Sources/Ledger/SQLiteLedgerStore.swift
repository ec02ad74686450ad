import Foundation
import GRDB
import Logging
import SignalboxCore

/// The embedded single-node ledger: one SQLite file in WAL mode, through GRDB.
///
/// Each operation is one transaction that runs whole on GRDB's writer queue, so a request's
/// hold or settlement costs one hop off the caller's thread, not one per statement. Balances are
/// cached in `balances` and updated in the same transaction as the entries they summarise.
/// `synchronous=NORMAL` in WAL mode survives a process crash (the case that matters for a
/// killed node); a power cut may lose the last moments of commits (see Docs/ledger.md).
public final class SQLiteLedgerStore: LedgerStore {
    let database: any DatabaseWriter

    private init(database: any DatabaseWriter) { self.database = database }

    /// Opens (creating if needed) the ledger at `path`, or an in-memory one for `nil`.
    public static func open(path: String?, logger: Logger = Logger(label: "signalbox.ledger")) async throws -> SQLiteLedgerStore {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        let database: any DatabaseWriter = if let path {
            try DatabasePool(path: path, configuration: configuration)
        } else {
            try DatabaseQueue(configuration: configuration)
        }
        let store = SQLiteLedgerStore(database: database)
        try await store.migrate()
        return store
    }

    public func close() async throws {
        if let pool = database as? DatabasePool { try pool.close() }
        if let queue = database as? DatabaseQueue { try queue.close() }
    }

    // MARK: Schema

    static let migrations: [(String, String)] = [
        ("v1", """
            CREATE TABLE accounts (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, is_system INTEGER NOT NULL, created_at INTEGER NOT NULL);
            CREATE TABLE balances (
                account_id TEXT PRIMARY KEY REFERENCES accounts(id),
                balance INTEGER NOT NULL DEFAULT 0, held INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE transfers (
                id INTEGER PRIMARY KEY AUTOINCREMENT, idempotency_key TEXT NOT NULL UNIQUE,
                debit_account TEXT NOT NULL REFERENCES accounts(id), credit_account TEXT NOT NULL REFERENCES accounts(id),
                amount INTEGER NOT NULL CHECK (amount >= 0), kind TEXT NOT NULL,
                key_id TEXT, generation_id TEXT, memo TEXT, created_at INTEGER NOT NULL);
            CREATE INDEX transfers_debit ON transfers(debit_account, id);
            CREATE INDEX transfers_credit ON transfers(credit_account, id);
            CREATE INDEX transfers_key ON transfers(key_id, created_at);
            CREATE TABLE holds (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), amount INTEGER NOT NULL,
                status TEXT NOT NULL, key_id TEXT, expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
            CREATE INDEX holds_pending ON holds(status, expires_at);
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), hash TEXT NOT NULL UNIQUE,
                label TEXT NOT NULL, name TEXT NOT NULL, is_admin INTEGER NOT NULL, disabled INTEGER NOT NULL,
                limit_nanos INTEGER, limit_reset TEXT, expires_at INTEGER, created_at INTEGER NOT NULL);
            CREATE TABLE generations (
                id TEXT PRIMARY KEY, account_id TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL,
                provider_name TEXT, provider_tag TEXT, upstream_id TEXT, streamed INTEGER NOT NULL,
                cancelled INTEGER NOT NULL, finish_reason TEXT, native_finish_reason TEXT,
                tokens_prompt INTEGER NOT NULL, tokens_completion INTEGER NOT NULL, tokens_cached INTEGER NOT NULL,
                tokens_cache_write INTEGER NOT NULL, tokens_reasoning INTEGER NOT NULL, cost INTEGER NOT NULL,
                latency_ms INTEGER NOT NULL, generation_time_ms INTEGER NOT NULL, attempts TEXT NOT NULL,
                created_at INTEGER NOT NULL);
            """),
        ("v2", """
            CREATE TABLE idempotent_requests (
                account_id TEXT NOT NULL, key TEXT NOT NULL, generation_id TEXT NOT NULL,
                status TEXT NOT NULL, response TEXT, created_at INTEGER NOT NULL,
                PRIMARY KEY (account_id, key));
            """),
        ("v3", "CREATE INDEX generations_account ON generations(account_id, created_at);"),
        ("v4", "ALTER TABLE accounts ADD COLUMN region TEXT; ALTER TABLE api_keys ADD COLUMN region TEXT;"),
        // No customer balance below zero or below what it holds, and no balance that SQLite's
        // integer overflow turned into a REAL (Docs/ledger.md). Triggers, because SQLite cannot
        // add a CHECK to an existing table; `verify` reports rows from before the rule.
        ("v5", """
            CREATE TRIGGER balances_customer_within_credit_update BEFORE UPDATE ON balances
            WHEN NEW.account_id NOT LIKE 'platform:%' AND NEW.account_id NOT LIKE 'provider:%'
              AND (NEW.balance < 0 OR NEW.held < 0 OR NEW.held > NEW.balance)
            BEGIN SELECT RAISE(ABORT, 'signalbox:overdrawn'); END;
            CREATE TRIGGER balances_integer_update BEFORE UPDATE ON balances
            WHEN typeof(NEW.balance) != 'integer' OR typeof(NEW.held) != 'integer'
            BEGIN SELECT RAISE(ABORT, 'signalbox:out-of-range'); END;
            CREATE TRIGGER transfers_amount_bounded BEFORE INSERT ON transfers
            WHEN typeof(NEW.amount) != 'integer' OR NEW.amount < 0 OR NEW.amount > \(Money.maximumAmount.nanos)
            BEGIN SELECT RAISE(ABORT, 'signalbox:amount'); END;
            CREATE TRIGGER holds_amount_non_negative BEFORE UPDATE ON holds
            WHEN NEW.amount < 0 OR typeof(NEW.amount) != 'integer'
            BEGIN SELECT RAISE(ABORT, 'signalbox:out-of-range'); END;
            """),
        // Idempotency claims remember what was asked and when their owner last said it was alive.
        ("v6", """
            CREATE INDEX transfers_generation ON transfers(generation_id);
            ALTER TABLE idempotent_requests ADD COLUMN fingerprint TEXT;
            ALTER TABLE idempotent_requests ADD COLUMN renewed_at INTEGER;
            UPDATE idempotent_requests SET renewed_at = created_at;
            """),
        // The ledger is append-only in the database, not only by convention (Docs/ledger.md).
        ("v7", """
            CREATE TRIGGER transfers_append_only_update BEFORE UPDATE ON transfers
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER transfers_append_only_delete BEFORE DELETE ON transfers
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER accounts_never_removed BEFORE DELETE ON accounts
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER accounts_never_renamed BEFORE UPDATE OF id ON accounts
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            """),
    ]

    public func migrate() async throws {
        var migrator = DatabaseMigrator()
        for (name, sql) in Self.migrations {
            migrator.registerMigration(name) { db in try db.execute(sql: sql) }
        }
        try migrator.migrate(database)
        try await write { db in
            for id in Billing.SystemAccount.all { try Self.ensureAccount(db, id: id, name: id, isSystem: true) }
        }
    }

    /// A write transaction whose broken ledger rules come out as the refusals they are.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await database.write(body)
        } catch let error as DatabaseError {
            switch error.message {
            case "signalbox:overdrawn"?: throw LedgerError.overdrawn("a customer account")
            case "signalbox:out-of-range"?: throw LedgerError.balanceOutOfRange("a balance")
            case "signalbox:amount"?: throw LedgerError.invalidAmount(.zero)
            default:
                // SUM() and integer arithmetic in SQL refuse to overflow with this message.
                if error.message?.contains("integer overflow") == true { throw LedgerError.balanceOutOfRange("a balance") }
                throw error
            }
        }
    }

    // MARK: Helpers (run inside a transaction)

    static func millis(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }
    /// `ttl` from now: the embedded ledger serves one node, whose clock is the ledger's.
    static func expiry(_ ttl: TimeInterval) -> Int64 { millis(Date()) + Int64(ttl * 1000) }
    static func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(millis) / 1000) }

    static func ensureAccount(_ db: Database, id: String, name: String, isSystem: Bool) throws {
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO accounts (id, name, is_system, created_at) VALUES (?, ?, ?, ?)").execute(arguments: [id, name, isSystem, millis(Date())])
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO balances (account_id) VALUES (?)").execute(arguments: [id])
    }

    /// System accounts (`platform:…`, `provider:…`) come into being when first used.
    static func requireAccount(_ db: Database, _ id: String) throws {
        if Billing.SystemAccount.isSystem(id) {
            try ensureAccount(db, id: id, name: id, isSystem: true)
        } else if try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM accounts WHERE id = ?"), arguments: [id]) == nil {
            throw LedgerError.unknownAccount(id)
        }
    }

    static func post(_ db: Database, _ transfer: TransferRequest) throws {
        guard transfer.hasValidAmount else { throw LedgerError.invalidAmount(transfer.amount) }
        if let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT debit_account, credit_account, amount FROM transfers WHERE idempotency_key = ?"),
                                      arguments: [transfer.idempotencyKey]) {
            let same = row["debit_account"] as String == transfer.debitAccount
                && row["credit_account"] as String == transfer.creditAccount
                && row["amount"] as Int64 == transfer.amount.nanos
            if same { return }
            throw LedgerError.idempotencyConflict(transfer.idempotencyKey)
        }
        try requireAccount(db, transfer.debitAccount)
        try requireAccount(db, transfer.creditAccount)
        try db.cachedStatement(sql: """
            INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [transfer.idempotencyKey, transfer.debitAccount, transfer.creditAccount, transfer.amount.nanos,
                             transfer.kind.rawValue, transfer.keyID, transfer.generationID, transfer.memo, millis(Date())])
        try db.cachedStatement(sql: "UPDATE balances SET balance = balance - ? WHERE account_id = ?").execute(arguments: [transfer.amount.nanos, transfer.debitAccount])
        try db.cachedStatement(sql: "UPDATE balances SET balance = balance + ? WHERE account_id = ?").execute(arguments: [transfer.amount.nanos, transfer.creditAccount])
    }

    /// Moves a pending hold to `status`, releasing its reservation. Returns false if it was not pending.
    @discardableResult
    static func closeHold(_ db: Database, id: String, status: HoldStatus) throws -> Bool {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT account_id, amount, status FROM holds WHERE id = ?"), arguments: [id]) else {
            throw LedgerError.unknownHold(id)
        }
        guard row["status"] as String == HoldStatus.pending.rawValue else { return false }
        try db.cachedStatement(sql: "UPDATE holds SET status = ? WHERE id = ?").execute(arguments: [status.rawValue, id])
        try db.cachedStatement(sql: "UPDATE balances SET held = held - ? WHERE account_id = ?").execute(arguments: [row["amount"] as Int64, row["account_id"] as String])
        return true
    }

    // MARK: Accounts and transfers

    public func createAccount(id: String, name: String) async throws -> Account {
        try await write { db in try Self.ensureAccount(db, id: id, name: name, isSystem: false) }
        return try await account(id: id)!
    }

    public func account(id: String) async throws -> Account? {
        try await database.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM accounts WHERE id = ?"), arguments: [id]).map {
                Account(id: $0["id"], name: $0["name"], isSystem: $0["is_system"], createdAt: Self.date($0["created_at"]),
                        region: $0["region"])
            }
        }
    }

    public func post(_ transfers: [TransferRequest]) async throws {
        try await write { db in
            for transfer in transfers { try Self.post(db, transfer) }
        }
    }

    // MARK: Settlement

    public func settle(_ batch: [Settlement]) async throws -> SettlementResult {
        try await write { db in
            var result = SettlementResult()
            for settlement in batch { try Self.settle(db, settlement, into: &result) }
            return result
        }
    }

    static func settle(_ db: Database, _ settlement: Settlement, into result: inout SettlementResult) throws {
        var settlement = settlement
        if try Row.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM generations WHERE id = ?"), arguments: [settlement.generation.id]) != nil {
            return  // replay
        }
        // Fencing: a claim another request took over is not this settlement's to close or charge
        // for — nor is one that is gone (taken over, then released by the request that took it).
        if let outcome = settlement.idempotency {
            let owner = try String.fetchOne(db.cachedStatement(sql: "SELECT generation_id FROM idempotent_requests WHERE account_id = ? AND key = ?"),
                                            arguments: [outcome.account, outcome.key])
            if owner != settlement.generation.id { settlement = settlement.refusingCharges() }
        }
        let generation = settlement.generation
        var backed = true
        switch settlement.reservation {
        case .lease(let leaseID, let release)?:
            backed = try shrinkLease(db, id: leaseID, by: release) != nil
        case nil:
            backed = false
        }
        if !backed {
            switch settlement.reservation {
            case .lease(let id, _)?: result.closedReservations.insert(id)
            case nil: break
            }
            // The reservation expired before its request settled: the tokens were served and the
            // provider is paid, but the customer pays only what it still has available.
            var available: [String: Money] = [:]
            for account in Set(settlement.transfers.map(\.debitAccount)) where !Billing.SystemAccount.isSystem(account) {
                if let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"), arguments: [account]) {
                    available[account] = Money(nanos: (row["balance"] as Int64) - (row["held"] as Int64))
                }
            }
            settlement = settlement.coveringShortfall(available: &available)
        }
        for transfer in settlement.transfers { try post(db, transfer) }
        try insertGeneration(db, settlement.generation)
        switch settlement.idempotency {
        case .completed(let account, let key, let response)?:
            try db.cachedStatement(sql: "UPDATE idempotent_requests SET status = 'done', response = ? WHERE account_id = ? AND key = ? AND generation_id = ?")
                .execute(arguments: [response, account, key, generation.id])
        case .released(let account, let key)?:
            try db.cachedStatement(sql: "DELETE FROM idempotent_requests WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'")
                .execute(arguments: [account, key, generation.id])
        case nil:
            break
        }
    }

    /// Shrinks an open lease by up to `amount`; returns what it still reserves, nil when it is not open.
    @discardableResult
    static func shrinkLease(_ db: Database, id: String, by amount: Money) throws -> Money? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT account_id, amount, status FROM holds WHERE id = ?"), arguments: [id]),
              row["status"] as String == HoldStatus.pending.rawValue
        else { return nil }
        let current: Int64 = row["amount"]
        let release = min(max(0, amount.nanos), current)
        try db.cachedStatement(sql: "UPDATE holds SET amount = amount - ? WHERE id = ?").execute(arguments: [release, id])
        try db.cachedStatement(sql: "UPDATE balances SET held = held - ? WHERE account_id = ?").execute(arguments: [release, row["account_id"] as String])
        return Money(nanos: current - release)
    }

    public func growLease(_ request: LeaseRequest) async throws -> LeaseGrant {
        try await write { db in
            let existing = try Row.fetchOne(db.cachedStatement(sql: "SELECT amount, status FROM holds WHERE id = ?"), arguments: [request.id])
            if let existing, existing["status"] as String != HoldStatus.pending.rawValue { return .closed }
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"),
                                             arguments: [request.account]) else {
                throw LedgerError.unknownAccount(request.account)
            }
            let available = Money(nanos: (row["balance"] as Int64) - (row["held"] as Int64))
            guard let grant = request.grant(available: available) else { return .insufficient(available: available) }
            let expires = Self.expiry(request.ttl)
            if existing == nil {
                try db.cachedStatement(sql: """
                    INSERT INTO holds (id, account_id, amount, status, key_id, expires_at, created_at) VALUES (?, ?, ?, 'pending', NULL, ?, ?)
                    """).execute(arguments: [request.id, request.account, grant.nanos, expires, Self.millis(Date())])
            } else {
                try db.cachedStatement(sql: "UPDATE holds SET amount = amount + ?, expires_at = ? WHERE id = ?")
                    .execute(arguments: [grant.nanos, expires, request.id])
            }
            try db.cachedStatement(sql: "UPDATE balances SET held = held + ? WHERE account_id = ?").execute(arguments: [grant.nanos, request.account])
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

    public func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim {
        try await write { db in
            let now = Self.millis(Date())
            if let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM idempotent_requests WHERE account_id = ? AND key = ?"),
                                          arguments: [request.account, request.key]) {
                let owner: String = row["generation_id"]
                if owner == request.generationID { return .claimed }
                if let fingerprint: String = row["fingerprint"], fingerprint != request.fingerprint { return .reused(generationID: owner) }
                if row["status"] as String == "done" { return .completed(generationID: owner, response: row["response"] ?? "") }
                let renewed: Int64 = row["renewed_at"] ?? row["created_at"]
                if renewed > now - Int64(request.staleAfter * 1000) { return .inProgress(generationID: owner) }
            }
            try db.cachedStatement(sql: """
                INSERT INTO idempotent_requests (account_id, key, generation_id, status, created_at, fingerprint, renewed_at)
                VALUES (?, ?, ?, 'pending', ?, ?, ?)
                ON CONFLICT (account_id, key) DO UPDATE SET generation_id = excluded.generation_id, renewed_at = excluded.renewed_at,
                  fingerprint = excluded.fingerprint
                """).execute(arguments: [request.account, request.key, request.generationID, now, request.fingerprint, now])
            return .claimed
        }
    }

    public func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(sql: """
                UPDATE idempotent_requests SET renewed_at = ? WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'
                """).execute(arguments: [Self.millis(Date()), account, key, generationID])
            return db.changesCount > 0
        }
    }

    public func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws {
        try await write { db in
            try db.cachedStatement(sql: "DELETE FROM idempotent_requests WHERE account_id = ? AND key = ? AND generation_id = ? AND status = 'pending'")
                .execute(arguments: [account, key, generationID])
        }
    }

    public func openLeaseAmount(id: String) async throws -> Money? {
        try await database.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT amount FROM holds WHERE id = ? AND status = 'pending'"), arguments: [id])
                .map(Money.init(nanos:))
        }
    }

    public func voidLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int {
        try await write { db in
            let ids = try String.fetchAll(db.cachedStatement(sql: """
                SELECT id FROM holds WHERE status = 'pending' AND substr(id, 1, ?) = ? AND created_at < ?
                """), arguments: ["lease:\(nodeID):".count, "lease:\(nodeID):", Self.millis(createdBefore)])
            for id in ids { try Self.closeHold(db, id: id, status: .voided) }
            return ids.count
        }
    }

    public func expireHolds() async throws -> Int {
        try await write { db in
            let ids = try String.fetchAll(db.cachedStatement(sql: "SELECT id FROM holds WHERE status = 'pending' AND expires_at < ?"),
                                          arguments: [Self.millis(Date())])
            for id in ids { try Self.closeHold(db, id: id, status: .voided) }
            return ids.count
        }
    }

    // MARK: Queries

    public func balance(account: String) async throws -> AccountBalance {
        try await database.read { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT balance, held FROM balances WHERE account_id = ?"), arguments: [account]) else {
                throw LedgerError.unknownAccount(account)
            }
            let balance: Int64 = row["balance"]
            let held: Int64 = row["held"]
            return AccountBalance(balance: Money(nanos: balance), available: Money(nanos: balance - held))
        }
    }

    static func arguments(_ values: [EntryQuery.Value]) -> StatementArguments {
        StatementArguments(values.map { value -> (any DatabaseValueConvertible)? in
            switch value {
            case .text(let text): text
            case .integer(let number): number
            }
        })
    }

    public func entries(_ query: EntryQuery) async throws -> [LedgerEntry] {
        let (conditions, values) = query.conditions { _ in "?" }
        return try await database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT t.*, g.model AS model FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
                WHERE \(conditions) ORDER BY t.id DESC LIMIT ?
                """, arguments: Self.arguments(values + [.integer(Int64(max(0, query.limit)))])).map { row in
                LedgerEntry(transfer: Transfer(
                    id: row["id"], idempotencyKey: row["idempotency_key"], debitAccount: row["debit_account"],
                    creditAccount: row["credit_account"], amount: Money(nanos: row["amount"]),
                    kind: TransferKind(rawValue: row["kind"]) ?? .adjustment, keyID: row["key_id"],
                    generationID: row["generation_id"], memo: row["memo"], createdAt: Self.date(row["created_at"])),
                    model: row["model"])
            }
        }
    }

    public func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow] {
        var charges = query
        charges.kind = .charge
        let (conditions, values) = charges.conditions { _ in "?" }
        let group = switch grouping {
        case .day: "strftime('%Y-%m-%d', t.created_at / 1000, 'unixepoch')"
        case .model: "COALESCE(g.model, '')"
        case .provider: "REPLACE(t.credit_account, 'provider:', '')"
        case .key: "COALESCE(t.key_id, '')"
        case .account: "t.debit_account"
        }
        return try await database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(group) AS grp, SUM(t.amount) AS amount, COUNT(*) AS requests
                FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
                WHERE \(conditions) GROUP BY grp ORDER BY amount DESC, grp
                """, arguments: Self.arguments(values)).map {
                SpendRow(group: $0["grp"], amount: Money(nanos: $0["amount"]), requests: $0["requests"])
            }
        }
    }

    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        try await database.read { db in
            let credits = try Int64.fetchOne(db.cachedStatement(sql: """
                SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = ? AND kind IN ('purchase', 'grant', 'refund')
                """), arguments: [account]) ?? 0
            let usage = try Int64.fetchOne(db.cachedStatement(sql: """
                SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = ? AND kind = 'charge'
                """), arguments: [account]) ?? 0
            return (Money(nanos: credits), Money(nanos: usage))
        }
    }

    public func purchasedTotal(account: String) async throws -> Money {
        try await database.read { db in
            Money(nanos: try Int64.fetchOne(db.cachedStatement(sql: """
                SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = ? AND kind = 'purchase'
                """), arguments: [account]) ?? 0)
        }
    }

    /// Checks every invariant in one read snapshot (WAL), a page of rows at a time.
    public func verify() async throws -> LedgerVerification {
        try await database.read { db in
            var result = LedgerVerification()
            var lastAccount = ""
            while true {
                let rows = try Row.fetchAll(db, sql: """
                    SELECT b.account_id, b.balance, b.held,
                      (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = b.account_id)
                      - (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = b.account_id) AS derived,
                      (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = b.account_id AND status = 'pending') AS derived_held
                    FROM balances b WHERE b.account_id > ? ORDER BY b.account_id LIMIT 1000
                    """, arguments: [lastAccount])
                guard let last = rows.last else { break }
                for row in rows {
                    result.account(row["account_id"], balance: row["balance"], held: row["held"],
                                   derivedBalance: row["derived"], derivedHeld: row["derived_held"])
                }
                lastAccount = last["account_id"]
            }
            var lastGeneration = ""
            while true {
                let rows = try Row.fetchAll(db, sql: """
                    SELECT g.id, g.cost, g.attempts,
                      (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE generation_id = g.id AND kind = 'charge') AS charged,
                      (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE generation_id = g.id
                         AND kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%') AS payable
                    FROM generations g WHERE g.id > ? ORDER BY g.id LIMIT 2000
                    """, arguments: [lastGeneration])
                guard let last = rows.last else { break }
                for row in rows {
                    result.generation(row["id"], cost: row["cost"], charged: row["charged"], payable: row["payable"], attempts: row["attempts"])
                }
                lastGeneration = last["id"]
            }
            let orphanCharges = try Int64.fetchAll(db, sql: """
                SELECT id FROM transfers t WHERE kind = 'charge'
                  AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
                """).map { "entry \($0)" }
            let orphanPayables = try Int64.fetchAll(db, sql: """
                SELECT id FROM transfers t WHERE kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%'
                  AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
                """).map { "entry \($0)" }
            let expired = try String.fetchAll(db, sql: "SELECT id FROM holds WHERE status = 'pending' AND expires_at < ? LIMIT 10000",
                                              arguments: [Self.millis(Date()) - Int64(LedgerVerification.expiryGrace * 1000)])
            let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM transfers") ?? 0
            result.finish(transfers: count, orphanCharges: orphanCharges, orphanPayables: orphanPayables, expiredHolds: expired)
            return result
        }
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord) async throws {
        try await write { db in
            try Self.requireAccount(db, key.accountID)
            try db.cachedStatement(sql: """
                INSERT INTO api_keys (id, account_id, hash, label, name, is_admin, disabled, limit_nanos, limit_reset, expires_at,
                                      created_at, region)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(hash) DO NOTHING
                """).execute(arguments: [key.id, key.accountID, key.hash, key.label, key.name, key.isAdmin, key.disabled,
                                 key.limit?.nanos, key.limitReset, key.expiresAt.map(Self.millis), Self.millis(key.createdAt),
                                 key.region])
        }
    }

    static let keySelect = "SELECT k.*, a.region AS account_region FROM api_keys k JOIN accounts a ON a.id = k.account_id "

    static func keyRecord(_ row: Row) -> KeyRecord {
        KeyRecord(
            id: row["id"], accountID: row["account_id"], hash: row["hash"], label: row["label"], name: row["name"],
            isAdmin: row["is_admin"], disabled: row["disabled"],
            limit: (row["limit_nanos"] as Int64?).map { Money(nanos: $0) }, limitReset: row["limit_reset"],
            expiresAt: (row["expires_at"] as Int64?).map(date), createdAt: date(row["created_at"]), region: row["region"],
            accountRegion: row["account_region"])
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
            if let name { try db.cachedStatement(sql: "UPDATE api_keys SET name = ? WHERE hash = ?").execute(arguments: [name, hash]) }
            if let disabled {
                try db.cachedStatement(sql: "UPDATE api_keys SET disabled = ? WHERE hash = ?").execute(arguments: [disabled, hash])
            }
            if let limit {
                try db.cachedStatement(sql: "UPDATE api_keys SET limit_nanos = ? WHERE hash = ?").execute(arguments: [limit?.nanos, hash])
            }
            if let limitReset {
                try db.cachedStatement(sql: "UPDATE api_keys SET limit_reset = ? WHERE hash = ?").execute(arguments: [limitReset, hash])
            }
            return try Row.fetchOne(db.cachedStatement(sql: Self.keySelect + "WHERE k.hash = ?"), arguments: [hash]).map(Self.keyRecord)
        }
    }

    public func setRegion(account: String, region: String?) async throws -> Bool {
        try await write { db in
            try db.cachedStatement(sql: "UPDATE accounts SET region = ? WHERE id = ? AND is_system = 0").execute(arguments: [region, account])
            return db.changesCount > 0
        }
    }

    public func setRegion(keyHash: String, region: String?) async throws -> KeyRecord? {
        try await write { db in
            try db.cachedStatement(sql: "UPDATE api_keys SET region = ? WHERE hash = ?").execute(arguments: [region, keyHash])
            return try Row.fetchOne(db.cachedStatement(sql: Self.keySelect + "WHERE k.hash = ?"), arguments: [keyHash]).map(Self.keyRecord)
        }
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
            let row = try Row.fetchOne(db, sql: """
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

    // MARK: Generations

    public func freeRequestCount(account: String, since: [Date]) async throws -> [Int] {
        try await database.read { db in
            try since.map { start in
                try Int.fetchOne(db.cachedStatement(sql: """
                    SELECT COUNT(*) FROM generations WHERE account_id = ? AND created_at >= ? AND model LIKE '%:free'
                    """), arguments: [account, Self.millis(start)]) ?? 0
            }
        }
    }

    static func insertGeneration(_ db: Database, _ g: GenerationRecord) throws {
        let attempts = AttemptRecord.json(g.attempts)
        try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO generations (id, account_id, key_id, model, provider_name, provider_tag, upstream_id,
              streamed, cancelled, finish_reason, native_finish_reason, tokens_prompt, tokens_completion, tokens_cached,
              tokens_cache_write, tokens_reasoning, cost, latency_ms, generation_time_ms, attempts, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                g.id, g.accountID, g.keyID, g.model, g.providerName, g.providerTag, g.upstreamID, g.streamed, g.cancelled,
                g.finishReason, g.nativeFinishReason, g.usage.promptTokens, g.usage.completionTokens, g.usage.cachedTokens,
                g.usage.cacheWriteTokens, g.usage.reasoningTokens, g.cost.nanos, g.latencyMs, g.generationTimeMs, attempts,
                millis(g.createdAt),
            ])
    }

    public func generation(id: String) async throws -> GenerationRecord? {
        try await database.read { db in
            guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM generations WHERE id = ?"), arguments: [id]) else { return nil }
            let attempts = (try? JSONDecoder().decode([AttemptRecord].self, from: Data((row["attempts"] as String).utf8))) ?? []
            return GenerationRecord(
                id: id, accountID: row["account_id"], keyID: row["key_id"], model: row["model"],
                providerName: row["provider_name"], providerTag: row["provider_tag"], upstreamID: row["upstream_id"],
                streamed: row["streamed"], cancelled: row["cancelled"], finishReason: row["finish_reason"],
                nativeFinishReason: row["native_finish_reason"],
                usage: TokenUsage(
                    promptTokens: row["tokens_prompt"], completionTokens: row["tokens_completion"], cachedTokens: row["tokens_cached"],
                    cacheWriteTokens: row["tokens_cache_write"], reasoningTokens: row["tokens_reasoning"]),
                cost: Money(nanos: row["cost"]), latencyMs: row["latency_ms"], generationTimeMs: row["generation_time_ms"],
                attempts: attempts, createdAt: Self.date(row["created_at"]))
        }
    }
}
