import Foundation
import GRDB
import Logging
import SignalboxCore

/// The embedded single-node ledger: one SQLite file in WAL mode, through GRDB.
///
/// Each operation is one transaction that runs whole on GRDB's writer queue, so a request's
/// lease growth or settlement costs one hop off the caller's thread, not one per statement. Balances are
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
        let database: any DatabaseWriter =
            if let path {
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
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO accounts (id, name, is_system, created_at) VALUES (?, ?, ?, ?)").execute(
            arguments: [id, name, isSystem, millis(Date())])
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

    /// Records `transfer`; false when it was there already (the same transfer by its idempotency key).
    @discardableResult
    static func post(_ db: Database, _ transfer: TransferRequest) throws -> Bool {
        guard transfer.hasValidAmount else { throw LedgerError.invalidAmount(transfer.amount) }
        if let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT debit_account, credit_account, amount FROM transfers WHERE idempotency_key = ?"),
            arguments: [transfer.idempotencyKey])
        {
            let same =
                row["debit_account"] as String == transfer.debitAccount
                && row["credit_account"] as String == transfer.creditAccount
                && row["amount"] as Int64 == transfer.amount.nanos
            if same { return false }
            throw LedgerError.idempotencyConflict(transfer.idempotencyKey)
        }
        try requireAccount(db, transfer.debitAccount)
        try requireAccount(db, transfer.creditAccount)
        try db.cachedStatement(
            sql: """
                INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            transfer.idempotencyKey, transfer.debitAccount, transfer.creditAccount, transfer.amount.nanos,
            transfer.kind.rawValue, transfer.keyID, transfer.generationID, transfer.memo, millis(Date()),
        ])
        try db.cachedStatement(sql: "UPDATE balances SET balance = balance - ? WHERE account_id = ?").execute(arguments: [
            transfer.amount.nanos, transfer.debitAccount,
        ])
        try db.cachedStatement(sql: "UPDATE balances SET balance = balance + ? WHERE account_id = ?").execute(arguments: [
            transfer.amount.nanos, transfer.creditAccount,
        ])
        return true
    }

    /// Moves a pending hold to `status`, releasing its reservation. Returns false if it was not pending.
    @discardableResult
    static func closeHold(_ db: Database, id: String, status: HoldStatus) throws -> Bool {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT account_id, amount, status FROM holds WHERE id = ?"), arguments: [id])
        else {
            throw LedgerError.unknownHold(id)
        }
        guard row["status"] as String == HoldStatus.pending.rawValue else { return false }
        try db.cachedStatement(sql: "UPDATE holds SET status = ? WHERE id = ?").execute(arguments: [status.rawValue, id])
        try db.cachedStatement(sql: "UPDATE balances SET held = held - ? WHERE account_id = ?").execute(arguments: [
            row["amount"] as Int64, row["account_id"] as String,
        ])
        return true
    }
}
