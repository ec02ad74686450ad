import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import ServiceLifecycle
import SignalboxCore

/// The cluster ledger: one PostgreSQL database that every node of every region writes to.
///
/// It keeps the same tables and rules as the embedded store (Docs/ledger.md), on a pooled
/// `PostgresClient`. A lease growth locks its account's balance row (`SELECT … FOR UPDATE`), so
/// concurrent growths from any number of nodes never reserve more than the balance.
/// The caller runs the client (`PostgresClient` is a swift-service-lifecycle `Service`).
public final class PostgresLedgerStore: LedgerStore {
    public let client: PostgresClient
    let logger: Logger
    /// Accounts known to exist (accounts are never deleted), so transfers skip the lookup.
    let knownAccounts = NIOLockedValueBox<Set<String>>([])
    /// Attempts for a transaction that lost a deadlock or serialization race before giving up.
    let conflictRetries = 5

    public init(client: PostgresClient, logger: Logger = Logger(label: "signalbox.ledger")) {
        self.client = client
        self.logger = logger
    }

    /// The server cancels any statement running longer, and ends any transaction left idle this
    /// long: the settlement deadline, so a batch the node gave up on (and spooled) holds no row
    /// locks after it. Migrations lift it for themselves; queries page to stay well under it.
    public static let statementTimeout: TimeInterval = 3

    /// A client configuration from a `postgres://user:password@host:port/database` URL.
    /// `statementTimeout` (a serving node's default) makes the server cancel longer statements and
    /// end transactions left idle that long; nil for tools that may run long statements (the
    /// CLI, migrations, test fixtures creating databases).
    public static func configuration(url: String, statementTimeout: TimeInterval? = PostgresLedgerStore.statementTimeout)
        throws -> PostgresClient.Configuration
    {
        var settings = try PostgresSettings(url: url)
        settings.statementTimeout = statementTimeout.map { .milliseconds(Int64($0 * 1000)) }
        return try settings.clientConfiguration()
    }

    public func close() async throws {}

    // MARK: Helpers

    static func millis(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1000) }
    static func date(_ millis: Int64) -> Date { Date(timeIntervalSince1970: TimeInterval(millis) / 1000) }

    static func rows(_ sequence: PostgresRowSequence) async throws -> [PostgresRandomAccessRow] {
        var result: [PostgresRandomAccessRow] = []
        for try await row in sequence { result.append(row.makeRandomAccess()) }
        return result
    }

    static func int(_ sequence: PostgresRowSequence) async throws -> Int64 {
        for try await value in sequence.decode(Int64.self) { return value }
        return 0
    }

    static func ensureAccount(_ connection: PostgresConnection, id: String, name: String, isSystem: Bool, logger: Logger) async throws {
        let now = millis(Date())
        try await connection.query(
            "INSERT INTO accounts (id, name, is_system, created_at) VALUES (\(id), \(name), \(isSystem), \(now)) ON CONFLICT DO NOTHING",
            logger: logger)
        try await connection.query("INSERT INTO balances (account_id) VALUES (\(id)) ON CONFLICT DO NOTHING", logger: logger)
    }

    /// Balance and held changes made by one transaction, applied at its end in account order:
    /// every writer locks balance rows in the same order, so concurrent batches from many nodes
    /// never deadlock, and a hot account (a provider's payables) is updated once per batch.
    struct BalanceDeltas {
        var changes: [String: (balance: Int64, held: Int64)] = [:]

        /// Sums in checked arithmetic: a batch whose changes leave the 64-bit range is refused.
        mutating func add(_ account: String, balance: Int64 = 0, held: Int64 = 0) throws {
            let current = changes[account] ?? (0, 0)
            let (newBalance, balanceOverflow) = current.balance.addingReportingOverflow(balance)
            let (newHeld, heldOverflow) = current.held.addingReportingOverflow(held)
            guard !balanceOverflow, !heldOverflow else { throw LedgerError.balanceOutOfRange(account) }
            changes[account] = (newBalance, newHeld)
        }

        func apply(_ connection: PostgresConnection, logger: Logger) async throws {
            for (account, change) in changes.sorted(by: { $0.key < $1.key }) where change != (0, 0) {
                try await connection.query(
                    "UPDATE balances SET balance = balance + \(change.balance), held = held + \(change.held) WHERE account_id = \(account)",
                    logger: logger)
            }
        }
    }

    /// Makes sure the accounts exist: system accounts (`platform:…`, `provider:…`) are created on
    /// first use, outside any batch; an unknown customer account is an error.
    func requireAccounts(_ ids: some Sequence<String>) async throws {
        let known = knownAccounts.withLockedValue { $0 }
        for id in Set(ids) where !known.contains(id) {
            if Billing.SystemAccount.isSystem(id) {
                let logger = self.logger
                try await transaction { try await Self.ensureAccount($0, id: id, name: id, isSystem: true, logger: logger) }
            } else if try await Self.rows(client.query("SELECT 1 FROM accounts WHERE id = \(id)", logger: logger)).isEmpty {
                throw LedgerError.unknownAccount(id)
            }
            knownAccounts.withLockedValue { _ = $0.insert(id) }
        }
    }

    /// Inserts a transfer unless its idempotency key was posted before (then it must match; false).
    /// The accounts must exist (`requireAccounts`); balances change through `deltas`.
    @discardableResult
    static func post(
        _ connection: PostgresConnection, _ transfer: TransferRequest, deltas: inout BalanceDeltas,
        logger: Logger
    ) async throws -> Bool {
        guard transfer.hasValidAmount else { throw LedgerError.invalidAmount(transfer.amount) }
        let now = millis(Date())
        let inserted = try await rows(
            connection.query(
                """
                INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
                VALUES (\(transfer.idempotencyKey), \(transfer.debitAccount), \(transfer.creditAccount), \(transfer.amount.nanos),
                        \(transfer.kind.rawValue), \(transfer.keyID), \(transfer.generationID), \(transfer.memo), \(now))
                ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
                """, logger: logger))
        if inserted.isEmpty {
            guard
                let row = try await rows(
                    connection.query(
                        "SELECT debit_account, credit_account, amount FROM transfers WHERE idempotency_key = \(transfer.idempotencyKey)",
                        logger: logger)
                ).first
            else { throw LedgerError.storage("transfer \(transfer.idempotencyKey) conflicted but is not there") }
            let same =
                try row["debit_account"].decode(String.self) == transfer.debitAccount
                && row["credit_account"].decode(String.self) == transfer.creditAccount
                && row["amount"].decode(Int64.self) == transfer.amount.nanos
            if same { return false }
            throw LedgerError.idempotencyConflict(transfer.idempotencyKey)
        }
        try deltas.add(transfer.debitAccount, balance: -transfer.amount.nanos)
        try deltas.add(transfer.creditAccount, balance: transfer.amount.nanos)
        return true
    }

    /// Moves a pending hold to `status`, releasing its reservation. Returns false if it was not pending.
    @discardableResult
    static func closeHold(
        _ connection: PostgresConnection, id: String, status: HoldStatus, deltas: inout BalanceDeltas,
        logger: Logger
    ) async throws -> Bool {
        guard
            let row = try await rows(
                connection.query(
                    "SELECT account_id, amount, status FROM holds WHERE id = \(id) FOR UPDATE", logger: logger)
            ).first
        else { throw LedgerError.unknownHold(id) }
        guard try row["status"].decode(String.self) == HoldStatus.pending.rawValue else { return false }
        try await connection.query("UPDATE holds SET status = \(status.rawValue) WHERE id = \(id)", logger: logger)
        try deltas.add(try row["account_id"].decode(String.self), held: -(try row["amount"].decode(Int64.self)))
        return true
    }

    /// Shrinks an open lease by up to `amount` in one statement; returns what it still reserves,
    /// nil when it is not open.
    static func shrinkLease(
        _ connection: PostgresConnection, id: String, by amount: Money, deltas: inout BalanceDeltas,
        logger: Logger
    ) async throws -> Money? {
        let release = max(0, amount.nanos)
        guard
            let row = try await rows(
                connection.query(
                    """
                    UPDATE holds h SET amount = h.amount - LEAST(h.amount, \(release))
                    FROM (SELECT amount AS before FROM holds WHERE id = \(id) FOR UPDATE) o
                    WHERE h.id = \(id) AND h.status = 'pending'
                    RETURNING h.account_id, h.amount, o.before - h.amount AS released
                    """, logger: logger)
            ).first
        else { return nil }
        try deltas.add(try row["account_id"].decode(String.self), held: -(try row["released"].decode(Int64.self)))
        return Money(nanos: try row["amount"].decode(Int64.self))
    }

    /// Runs `body` in a transaction; the ledger's own errors come out unwrapped. A transaction
    /// that loses a deadlock or serialization race is run again.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> sending T) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await client.withTransaction(logger: logger) { connection in try await body(connection) }
            } catch let error as PostgresTransactionError {
                if let ledgerError = error.closureError as? LedgerError, error.rollbackError == nil { throw ledgerError }
                if attempt < conflictRetries, let psql = error.closureError as? PSQLError,
                    let state = psql.serverInfo?[.sqlState], ["40001", "40P01"].contains(state)
                {
                    continue
                }
                if let psql = error.closureError as? PSQLError, let mapped = Self.ledgerError(psql) { throw mapped }
                throw error
            } catch let error as PSQLError {
                if let mapped = Self.ledgerError(error) { throw mapped }
                throw error
            }
        }
    }

    /// What a PostgreSQL error means for the ledger: the ledger's own rules broken by a statement
    /// are the refusals they are (a customer overdrawn by the `customer_within_credit` check, a
    /// balance leaving BIGINT's range); a server that is slow or gone is `unreachable`, which says
    /// nothing about the data (no settlement is set aside for it). Anything else stays as it is.
    static func ledgerError(_ error: PSQLError) -> LedgerError? {
        let lost: [PSQLError.Code] = [
            .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown,
            .poolClosed, .queryCancelled,
        ]
        if lost.contains(error.code) { return .unreachable("PostgreSQL connection: \(error.code)") }
        guard let state = error.serverInfo?[.sqlState] else { return nil }
        if state == "57014" || state.hasPrefix("08") || state.hasPrefix("57P") || state == "40001" || state == "40P01" {
            // A statement the server cancelled (statement_timeout), a lost connection, a server
            // shutting down, a race still lost after retries: the database is slow or going away.
            return .unreachable("PostgreSQL SQLSTATE \(state)")
        }
        switch state {
        case "23514":
            // "Failing row contains (alice, -5, 0)." names the account.
            let detail = error.serverInfo?[.detail] ?? ""
            let account = detail.split(separator: "(", maxSplits: 1).dropFirst().first?.split(separator: ",").first
            return .overdrawn(account.map(String.init) ?? "a customer account")
        case "22003": return .balanceOutOfRange(error.serverInfo?[.message] ?? "a balance")
        case "23503": return .unknownAccount(error.serverInfo?[.detail] ?? "an account")
        default: return nil
        }
    }
}

extension PostgresLedgerStore {
    /// A store on a new connection pool, and the pool: a `Service` that must run (first in the
    /// node's service group, so it stops last) for the store to answer. Not migrated yet.
    public static func make(settings: PostgresSettings, logger: Logger = Logger(label: "signalbox.ledger")) throws -> (
        store: PostgresLedgerStore, pool: any Service
    ) {
        let client = PostgresClient(configuration: try settings.clientConfiguration())
        return (PostgresLedgerStore(client: client, logger: logger), client)
    }

    /// Runs `body` with a migrated store on its own connection pool, which runs for exactly as
    /// long as `body` does. It first opens one connection to say at once why the database can't
    /// be reached (`PostgresConnectionProblem`); a schema newer than this binary's is refused.
    public static func withStore<T: Sendable>(
        settings: PostgresSettings, logger: Logger = Logger(label: "signalbox.ledger"),
        _ body: (PostgresLedgerStore) async throws -> T
    ) async throws -> T {
        if let problem = await settings.diagnose(logger: logger) { throw problem }
        let (store, pool) = try make(settings: settings, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await pool.run() }
            defer { group.cancelAll() }
            try await store.migrate()
            return try await body(store)
        }
    }
}
