import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

/// The cluster ledger: one PostgreSQL database that every node of every region writes to.
///
/// It keeps the same tables and rules as the embedded store (Docs/ledger.md), on a pooled
/// `PostgresClient`. Holds lock their account's balance row (`SELECT … FOR UPDATE`), so
/// concurrent holds from any number of nodes never reserve more than the balance.
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
        throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
              let host = components.host, !host.isEmpty
        else { throw LedgerError.storage("not a postgres:// URL: \(url)") }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        var configuration = PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: components.password, database: database.isEmpty ? nil : database, tls: .disable)
        configuration.options.maximumConnections = 20
        // A statement or an abandoned transaction outlives no client deadline (settlements give
        // up after 3 s): the server cancels it and frees its row locks instead of holding them.
        if let statementTimeout {
            configuration.options.additionalStartupParameters = [
                ("statement_timeout", String(Int(statementTimeout * 1000))),
                ("idle_in_transaction_session_timeout", String(Int(statementTimeout * 1000))),
            ]
        }
        return configuration
    }

    public func close() async throws {}

    // MARK: Schema

    /// Versioned migrations; each version's statements run in one transaction.
    static let migrations: [(version: Int, statements: [String])] = [
        (1, [
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL, is_system BOOLEAN NOT NULL, created_at BIGINT NOT NULL)",
            """
            CREATE TABLE balances (account_id TEXT PRIMARY KEY REFERENCES accounts(id),
                balance BIGINT NOT NULL DEFAULT 0, held BIGINT NOT NULL DEFAULT 0)
            """,
            """
            CREATE TABLE transfers (id BIGSERIAL PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE,
                debit_account TEXT NOT NULL REFERENCES accounts(id), credit_account TEXT NOT NULL REFERENCES accounts(id),
                amount BIGINT NOT NULL CHECK (amount >= 0), kind TEXT NOT NULL, key_id TEXT, generation_id TEXT, memo TEXT,
                created_at BIGINT NOT NULL)
            """,
            "CREATE INDEX transfers_debit ON transfers(debit_account, id)",
            "CREATE INDEX transfers_credit ON transfers(credit_account, id)",
            "CREATE INDEX transfers_key ON transfers(key_id, created_at)",
            """
            CREATE TABLE holds (id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), amount BIGINT NOT NULL,
                status TEXT NOT NULL, key_id TEXT, expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL)
            """,
            "CREATE INDEX holds_pending ON holds(status, expires_at)",
            """
            CREATE TABLE api_keys (id TEXT PRIMARY KEY, account_id TEXT NOT NULL REFERENCES accounts(id), hash TEXT NOT NULL UNIQUE,
                label TEXT NOT NULL, name TEXT NOT NULL, is_admin BOOLEAN NOT NULL, disabled BOOLEAN NOT NULL,
                limit_nanos BIGINT, limit_reset TEXT, expires_at BIGINT, created_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE generations (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, key_id TEXT, model TEXT NOT NULL,
                provider_name TEXT, provider_tag TEXT, upstream_id TEXT, streamed BOOLEAN NOT NULL, cancelled BOOLEAN NOT NULL,
                finish_reason TEXT, native_finish_reason TEXT, tokens_prompt BIGINT NOT NULL, tokens_completion BIGINT NOT NULL,
                tokens_cached BIGINT NOT NULL, tokens_cache_write BIGINT NOT NULL, tokens_reasoning BIGINT NOT NULL,
                cost BIGINT NOT NULL, latency_ms BIGINT NOT NULL, generation_time_ms BIGINT NOT NULL, attempts TEXT NOT NULL,
                created_at BIGINT NOT NULL)
            """,
            """
            CREATE TABLE idempotent_requests (account_id TEXT NOT NULL, key TEXT NOT NULL, generation_id TEXT NOT NULL,
                status TEXT NOT NULL, response TEXT, created_at BIGINT NOT NULL, PRIMARY KEY (account_id, key))
            """,
        ]),
        (2, ["CREATE INDEX generations_account ON generations(account_id, created_at)"]),
        (3, ["ALTER TABLE accounts ADD COLUMN region TEXT", "ALTER TABLE api_keys ADD COLUMN region TEXT"]),
        (4, [
            // No customer balance below zero or below what it holds (Docs/ledger.md). NOT VALID:
            // rows from before the rule are reported by `verify`, not refused at upgrade.
            """
            ALTER TABLE balances ADD CONSTRAINT customer_within_credit CHECK (
                account_id LIKE 'platform:%' OR account_id LIKE 'provider:%' OR (balance >= 0 AND held >= 0 AND held <= balance)
            ) NOT VALID
            """,
            "ALTER TABLE holds ADD CONSTRAINT hold_amount_non_negative CHECK (amount >= 0) NOT VALID",
            "ALTER TABLE transfers ADD CONSTRAINT transfer_amount_bounded CHECK (amount <= \(Money.maximumAmount.nanos)) NOT VALID",
            // Idempotency claims remember what was asked and when their owner last said it was alive.
            "ALTER TABLE idempotent_requests ADD COLUMN fingerprint TEXT",
            "ALTER TABLE idempotent_requests ADD COLUMN renewed_at BIGINT",
            "UPDATE idempotent_requests SET renewed_at = created_at",
        ]),
        (5, [settleFunction]),  // (also re-created on every migrate, below)
        (6, ["CREATE INDEX transfers_generation ON transfers(generation_id)"]),
        // Ids and keys compare byte by byte, whatever the database's default collation: no
        // lookup, join or lock order needs a language's ordering, and "C" is several times cheaper
        // in every index the hot path writes. (Rewrites these tables once; see Docs/ledger.md.)
        (7, [
            #"ALTER TABLE accounts ALTER COLUMN id TYPE TEXT COLLATE "C""#,
            #"ALTER TABLE balances ALTER COLUMN account_id TYPE TEXT COLLATE "C""#,
            #"""
            ALTER TABLE transfers ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C", ALTER COLUMN debit_account TYPE TEXT COLLATE "C",
              ALTER COLUMN credit_account TYPE TEXT COLLATE "C", ALTER COLUMN key_id TYPE TEXT COLLATE "C",
              ALTER COLUMN generation_id TYPE TEXT COLLATE "C"
            """#,
            #"ALTER TABLE holds ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN account_id TYPE TEXT COLLATE "C""#,
            #"ALTER TABLE generations ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN account_id TYPE TEXT COLLATE "C""#,
            #"ALTER TABLE idempotent_requests ALTER COLUMN account_id TYPE TEXT COLLATE "C", ALTER COLUMN key TYPE TEXT COLLATE "C""#,
            #"""
            ALTER TABLE api_keys ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN account_id TYPE TEXT COLLATE "C",
              ALTER COLUMN hash TYPE TEXT COLLATE "C"
            """#,
        ]),
        // The ledger is append-only in the database, not only by convention; and a transfer's
        // accounts are checked once per statement instead of by two row-level foreign keys (their
        // triggers were a fifth of the settlement's cost). Accounts are never deleted or renamed,
        // so a check without a row lock cannot race a delete.
        (8, [
            "ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_debit_account_fkey",
            "ALTER TABLE transfers DROP CONSTRAINT IF EXISTS transfers_credit_account_fkey",
            """
            CREATE FUNCTION signalbox_transfers_name_accounts() RETURNS trigger LANGUAGE plpgsql AS $fn$
            DECLARE missing text;
            BEGIN
              SELECT n.account INTO missing
              FROM (SELECT debit_account AS account FROM inserted UNION SELECT credit_account FROM inserted) n
              WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account) LIMIT 1;
              IF missing IS NOT NULL THEN
                RAISE EXCEPTION 'a transfer names an unknown account' USING ERRCODE = 'foreign_key_violation', DETAIL = missing;
              END IF;
              RETURN NULL;
            END
            $fn$
            """,
            """
            CREATE TRIGGER transfers_name_accounts AFTER INSERT ON transfers REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION signalbox_transfers_name_accounts()
            """,
            """
            CREATE FUNCTION signalbox_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
            BEGIN
              RAISE EXCEPTION '% on % refused: the ledger is append-only', TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END
            $fn$
            """,
            "CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON transfers FOR EACH STATEMENT EXECUTE FUNCTION signalbox_refuse_change()",
            "CREATE TRIGGER accounts_never_removed BEFORE DELETE OR TRUNCATE ON accounts FOR EACH STATEMENT EXECUTE FUNCTION signalbox_refuse_change()",
            "CREATE TRIGGER accounts_never_renamed BEFORE UPDATE OF id ON accounts FOR EACH STATEMENT EXECUTE FUNCTION signalbox_refuse_change()",
        ]),
    ]

    /// A whole settlement batch in one statement, so it costs one round trip whatever accounts
    /// and idempotency keys it touches. It handles the common case — every settlement new, on an
    /// open lease, its claim still its own, its transfers new — and otherwise answers `slow` (or
    /// raises `signalbox:slow`, undoing the statement); the store then runs the general path
    /// (`settleBatch`). Shared rows are locked in a fixed order (claims by account and key, leases
    /// by id, balances by account), as the general path does, and as late as possible.
    ///
    /// Rows arrive as one array per column (`SettleRows`), sent in PostgreSQL's binary format:
    /// nothing to parse, where a JSON document cost a fifth of the statement. Arrays cannot hold
    /// NULL here, so an optional text column travels as '' and is stored as NULL.
    /// (`signalbox_settle(jsonb)`, the earlier form, stays for nodes of older versions during an upgrade.)
    static let settleFunction = """
        CREATE OR REPLACE FUNCTION signalbox_settle_rows(
          g_id text[], g_account text[], g_key text[], g_model text[], g_provider_name text[], g_provider_tag text[],
          g_upstream text[], g_streamed boolean[], g_cancelled boolean[], g_finish text[], g_native_finish text[],
          g_prompt bigint[], g_completion bigint[], g_cached bigint[], g_cache_write bigint[], g_reasoning bigint[],
          g_cost bigint[], g_latency bigint[], g_generation_time bigint[], g_attempts text[], g_created bigint[],
          t_key text[], t_debit text[], t_credit text[], t_amount bigint[], t_kind text[], t_key_id text[],
          t_generation text[], t_memo text[], t_created bigint,
          l_id text[], l_release bigint[],
          c_account text[], c_key text[], c_generation text[], c_completed boolean[], c_response text[]
        ) RETURNS text LANGUAGE plpgsql AS $fn$
        DECLARE
          locked_count int;
          released_accounts text[];
          released_amounts bigint[];
        BEGIN
          -- Claims first, in (account, key) order, as the general path locks them: a claim that is
          -- another generation's, or gone, is the general path's to fence.
          IF cardinality(c_key) > 0 THEN
            SELECT count(*) INTO locked_count FROM (
              SELECT i.key FROM idempotent_requests i
              JOIN unnest(c_account, c_key, c_generation) AS c(account_id, key, generation_id)
                ON c.account_id = i.account_id AND c.key = i.key AND c.generation_id = i.generation_id
              ORDER BY i.account_id, i.key FOR UPDATE OF i) c;
            IF locked_count <> cardinality(c_key) THEN RETURN 'slow'; END IF;
          END IF;

          -- New rows first: they conflict with no other batch, so two batches write them side by
          -- side; the rows every batch shares (leases, balances) are locked last, in a fixed
          -- order, and held only until the commit. Anything unexpected (a replay, which the
          -- unique indexes refuse; a lease no longer open) undoes the whole statement and leaves
          -- the batch to the general path. Plain inserts: ON CONFLICT's speculative insertion
          -- costs every row for the rare replay.
          INSERT INTO generations (id, account_id, key_id, model, provider_name, provider_tag, upstream_id, streamed, cancelled,
            finish_reason, native_finish_reason, tokens_prompt, tokens_completion, tokens_cached, tokens_cache_write,
            tokens_reasoning, cost, latency_ms, generation_time_ms, attempts, created_at)
          SELECT id, account_id, NULLIF(key_id, ''), model, NULLIF(provider_name, ''), NULLIF(provider_tag, ''),
            NULLIF(upstream_id, ''), streamed, cancelled, NULLIF(finish_reason, ''), NULLIF(native_finish_reason, ''),
            tokens_prompt, tokens_completion, tokens_cached, tokens_cache_write, tokens_reasoning, cost, latency_ms,
            generation_time_ms, attempts, created_at
          FROM unnest(g_id, g_account, g_key, g_model, g_provider_name, g_provider_tag, g_upstream, g_streamed, g_cancelled,
            g_finish, g_native_finish, g_prompt, g_completion, g_cached, g_cache_write, g_reasoning, g_cost, g_latency,
            g_generation_time, g_attempts, g_created)
            AS g(id, account_id, key_id, model, provider_name, provider_tag, upstream_id, streamed, cancelled, finish_reason,
              native_finish_reason, tokens_prompt, tokens_completion, tokens_cached, tokens_cache_write, tokens_reasoning,
              cost, latency_ms, generation_time_ms, attempts, created_at);

          INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
          SELECT idempotency_key, debit_account, credit_account, amount, kind, NULLIF(key_id, ''), NULLIF(generation_id, ''),
            NULLIF(memo, ''), t_created
          FROM unnest(t_key, t_debit, t_credit, t_amount, t_kind, t_key_id, t_generation, t_memo)
            AS t(idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo);

          SELECT count(*) INTO locked_count FROM (
            SELECT h.id FROM holds h JOIN unnest(l_id) AS r(id) ON r.id = h.id
            WHERE h.status = 'pending' ORDER BY h.id FOR UPDATE OF h) l;
          IF locked_count <> cardinality(l_id) THEN RAISE EXCEPTION 'signalbox:slow'; END IF;

          WITH r AS (SELECT * FROM unnest(l_id, l_release) AS r(id, release)),
          before AS (SELECT h.id, h.amount FROM holds h JOIN r ON r.id = h.id),
          changed AS (
            UPDATE holds h SET amount = h.amount - LEAST(h.amount, r.release) FROM r, before b
            WHERE h.id = r.id AND b.id = h.id RETURNING h.account_id, b.amount - h.amount AS released)
          SELECT array_agg(account_id), array_agg(released) INTO released_accounts, released_amounts FROM changed;

          WITH changes AS (
            SELECT account, -amount AS balance, 0::bigint AS held FROM unnest(t_debit, t_amount) AS t(account, amount)
            UNION ALL SELECT account, amount, 0 FROM unnest(t_credit, t_amount) AS t(account, amount)
            UNION ALL SELECT account, 0, -released FROM unnest(released_accounts, released_amounts) AS l(account, released)),
          summed AS (SELECT account, sum(balance)::bigint AS balance, sum(held)::bigint AS held FROM changes GROUP BY account),
          locked AS (SELECT b.account_id FROM balances b JOIN summed s ON s.account = b.account_id
                     ORDER BY b.account_id FOR UPDATE OF b)
          UPDATE balances b SET balance = b.balance + s.balance, held = b.held + s.held
          FROM summed s, locked l WHERE b.account_id = s.account AND l.account_id = b.account_id
            AND (s.balance <> 0 OR s.held <> 0);

          IF cardinality(c_key) > 0 THEN
            UPDATE idempotent_requests i SET status = 'done', response = c.response
            FROM unnest(c_account, c_key, c_generation, c_completed, c_response)
              AS c(account_id, key, generation_id, completed, response)
            WHERE c.completed AND i.account_id = c.account_id AND i.key = c.key AND i.generation_id = c.generation_id;
            DELETE FROM idempotent_requests i
            USING unnest(c_account, c_key, c_generation, c_completed) AS c(account_id, key, generation_id, completed)
            WHERE NOT c.completed AND i.account_id = c.account_id AND i.key = c.key AND i.generation_id = c.generation_id
              AND i.status = 'pending';
          END IF;
          RETURN 'ok';
        END
        $fn$
        """

    /// Creates or upgrades the schema; safe to run on every start and from several nodes at once.
    public func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            // One migrator at a time across the cluster, however long the others take.
            try await connection.query("SET LOCAL statement_timeout = 0", logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(7215043)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)", logger: logger)
            let current = try await Self.int(connection.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", logger: logger))
            for migration in Self.migrations where migration.version > current {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schema_migrations (version) VALUES (\(migration.version))", logger: logger)
            }
            // The settle function is replaced on every migrate, so a newer binary's version is the one that runs.
            try await connection.query(PostgresQuery(unsafeSQL: Self.settleFunction), logger: logger)
            for id in Billing.SystemAccount.all { try await Self.ensureAccount(connection, id: id, name: id, isSystem: true, logger: logger) }
        }
    }

    /// The schema version this database is at.
    public func schemaVersion() async throws -> Int {
        Int(try await Self.int(client.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", logger: logger)))
    }

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

    /// Inserts a transfer unless its idempotency key was posted before (then it must match).
    /// The accounts must exist (`requireAccounts`); balances change through `deltas`.
    static func post(_ connection: PostgresConnection, _ transfer: TransferRequest, deltas: inout BalanceDeltas,
                     logger: Logger) async throws {
        guard transfer.hasValidAmount else { throw LedgerError.invalidAmount(transfer.amount) }
        let now = millis(Date())
        let inserted = try await rows(connection.query("""
            INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, generation_id, memo, created_at)
            VALUES (\(transfer.idempotencyKey), \(transfer.debitAccount), \(transfer.creditAccount), \(transfer.amount.nanos),
                    \(transfer.kind.rawValue), \(transfer.keyID), \(transfer.generationID), \(transfer.memo), \(now))
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
            """, logger: logger))
        if inserted.isEmpty {
            guard let row = try await rows(connection.query(
                "SELECT debit_account, credit_account, amount FROM transfers WHERE idempotency_key = \(transfer.idempotencyKey)",
                logger: logger)).first
            else { throw LedgerError.storage("transfer \(transfer.idempotencyKey) conflicted but is not there") }
            let same = try row["debit_account"].decode(String.self) == transfer.debitAccount
                && row["credit_account"].decode(String.self) == transfer.creditAccount
                && row["amount"].decode(Int64.self) == transfer.amount.nanos
            if same { return }
            throw LedgerError.idempotencyConflict(transfer.idempotencyKey)
        }
        try deltas.add(transfer.debitAccount, balance: -transfer.amount.nanos)
        try deltas.add(transfer.creditAccount, balance: transfer.amount.nanos)
    }

    /// Moves a pending hold to `status`, releasing its reservation. Returns false if it was not pending.
    @discardableResult
    static func closeHold(_ connection: PostgresConnection, id: String, status: HoldStatus, deltas: inout BalanceDeltas,
                          logger: Logger) async throws -> Bool {
        guard let row = try await rows(connection.query(
            "SELECT account_id, amount, status FROM holds WHERE id = \(id) FOR UPDATE", logger: logger)).first
        else { throw LedgerError.unknownHold(id) }
        guard try row["status"].decode(String.self) == HoldStatus.pending.rawValue else { return false }
        try await connection.query("UPDATE holds SET status = \(status.rawValue) WHERE id = \(id)", logger: logger)
        try deltas.add(try row["account_id"].decode(String.self), held: -(try row["amount"].decode(Int64.self)))
        return true
    }

    /// Shrinks an open lease by up to `amount` in one statement; returns what it still reserves,
    /// nil when it is not open.
    static func shrinkLease(_ connection: PostgresConnection, id: String, by amount: Money, deltas: inout BalanceDeltas,
                            logger: Logger) async throws -> Money? {
        let release = max(0, amount.nanos)
        guard let row = try await rows(connection.query("""
            UPDATE holds h SET amount = h.amount - LEAST(h.amount, \(release))
            FROM (SELECT amount AS before FROM holds WHERE id = \(id) FOR UPDATE) o
            WHERE h.id = \(id) AND h.status = 'pending'
            RETURNING h.account_id, h.amount, o.before - h.amount AS released
            """, logger: logger)).first
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
                   let state = psql.serverInfo?[.sqlState], ["40001", "40P01"].contains(state) {
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
        let lost: [PSQLError.Code] = [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown,
                                      .poolClosed, .queryCancelled]
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

    // MARK: Accounts and transfers

    public func createAccount(id: String, name: String) async throws -> Account {
        let logger = self.logger
        try await transaction { try await Self.ensureAccount($0, id: id, name: name, isSystem: false, logger: logger) }
        return try await account(id: id)!
    }

    public func account(id: String) async throws -> Account? {
        try await Self.rows(client.query("SELECT id, name, is_system, created_at, region FROM accounts WHERE id = \(id)", logger: logger)).first.map {
            Account(id: try $0["id"].decode(String.self), name: try $0["name"].decode(String.self),
                    isSystem: try $0["is_system"].decode(Bool.self), createdAt: Self.date(try $0["created_at"].decode(Int64.self)),
                    region: try $0["region"].decode(String?.self))
        }
    }

    public func post(_ transfers: [TransferRequest]) async throws {
        try await requireAccounts(transfers.flatMap { [$0.debitAccount, $0.creditAccount] })
        let logger = self.logger
        try await transaction { connection in
            var deltas = BalanceDeltas()
            for transfer in transfers { try await Self.post(connection, transfer, deltas: &deltas, logger: logger) }
            try await deltas.apply(connection, logger: logger)
        }
    }

    // MARK: Settlement

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
        let bindings = SettleRows(batch, createdAt: Self.millis(Date())).bindings
        var attempt = 0
        while true {
            attempt += 1
            do {
                let rows = try await Self.rows(client.query(PostgresQuery(unsafeSQL: SettleRows.statement, binds: bindings),
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
    static func settleBatch(_ connection: PostgresConnection, _ batch: [Settlement], deltas: inout BalanceDeltas,
                            logger: Logger) async throws -> SettlementResult {
        var result = SettlementResult()
        // 1. Generation records; a settlement whose record is already there is a replay, skipped whole.
        var seen = Set<String>()
        var unique = batch.filter { seen.insert($0.generation.id).inserted }
        // 0. Fencing: a claim another request took over is not this settlement's to close or charge for.
        let claims = unique.compactMap { settlement in settlement.idempotency.map { ($0.account, $0.key) } }
        if !claims.isEmpty {
            var owners: [String: String] = [:]
            for row in try await rows(connection.query(PostgresQuery(unsafeSQL: """
                SELECT i.account_id, i.key, i.generation_id FROM idempotent_requests i
                JOIN json_to_recordset($1::json) AS c(account_id TEXT, key TEXT) ON c.account_id = i.account_id AND c.key = i.key
                ORDER BY i.account_id, i.key FOR UPDATE OF i
                """, binds: jsonRows(claims.map { ["account_id": .string($0.0), "key": .string($0.1)] })), logger: logger)) {
                owners[try row["account_id"].decode(String.self) + "\u{0}" + row["key"].decode(String.self)] = try row["generation_id"].decode(String.self)
            }
            // A claim taken over, or gone (taken over, then released by the request that took it).
            for index in unique.indices {
                guard let outcome = unique[index].idempotency,
                      owners[outcome.account + "\u{0}" + outcome.key] != unique[index].generation.id else { continue }
                unique[index] = unique[index].refusingCharges()
            }
        }
        let stored = try await rows(connection.query(PostgresQuery(unsafeSQL: """
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
            let released = try await rows(connection.query(PostgresQuery(unsafeSQL: """
                WITH r AS (SELECT * FROM json_to_recordset($1::json) AS r(id TEXT, release BIGINT)),
                locked AS (SELECT h.id, h.amount FROM holds h JOIN r ON r.id = h.id WHERE h.status = 'pending'
                           ORDER BY h.id FOR UPDATE OF h)
                UPDATE holds h SET amount = h.amount - LEAST(h.amount, r.release) FROM r, locked l
                WHERE h.id = r.id AND l.id = h.id
                RETURNING h.id, h.account_id, l.amount - h.amount AS released
                """, binds: jsonRows(releases.sorted { $0.key < $1.key }.map { ["id": .string($0.key), "release": .int($0.value)] })),
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
                .filter { !Billing.SystemAccount.isSystem($0) }.sorted()
            var available: [String: Money] = [:]
            if !payers.isEmpty {
                for row in try await rows(connection.query(
                    "SELECT account_id, balance, held FROM balances WHERE account_id = ANY(\(payers)) ORDER BY account_id FOR UPDATE",
                    logger: logger)) {
                    let account = try row["account_id"].decode(String.self)
                    let pending = deltas.changes[account] ?? (0, 0)
                    available[account] = Money(nanos: try row["balance"].decode(Int64.self) + pending.balance
                                                   - row["held"].decode(Int64.self) - pending.held)
                }
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
            let inserted = try await rows(connection.query(PostgresQuery(unsafeSQL: """
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
                try await connection.query("""
                    UPDATE idempotent_requests SET status = 'done', response = \(response)
                    WHERE account_id = \(account) AND key = \(key) AND generation_id = \(owner)
                    """, logger: logger)
            case .released(let account, let key)?:
                let owner = settlement.generation.id
                try await connection.query("""
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

    public func growLease(_ request: LeaseRequest) async throws -> LeaseGrant {
        let logger = self.logger
        return try await transaction { connection in
            // Lock order: the lease's hold row, then the balance row (as settlements do).
            let existing = try await Self.rows(connection.query(
                "SELECT amount, status FROM holds WHERE id = \(request.id) FOR UPDATE", logger: logger)).first
            if let existing, try existing["status"].decode(String.self) != HoldStatus.pending.rawValue { return .closed }
            guard let row = try await Self.rows(connection.query(
                "SELECT balance, held FROM balances WHERE account_id = \(request.account) FOR UPDATE", logger: logger)).first
            else { throw LedgerError.unknownAccount(request.account) }
            let available = Money(nanos: try row["balance"].decode(Int64.self) - row["held"].decode(Int64.self))
            guard let grant = request.grant(available: available) else { return .insufficient(available: available) }
            let ttl = Int64(request.ttl * 1000)
            if existing == nil {
                let now = Self.millis(Date())
                try await connection.query("""
                    INSERT INTO holds (id, account_id, amount, status, key_id, expires_at, created_at)
                    VALUES (\(request.id), \(request.account), \(grant.nanos), 'pending', NULL, \(unescaped: Self.databaseNow) + \(ttl), \(now))
                    """, logger: logger)
            } else {
                try await connection.query("""
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

    public func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim {
        let logger = self.logger
        return try await transaction { connection in
            try await connection.query("""
                INSERT INTO idempotent_requests (account_id, key, generation_id, status, created_at, fingerprint, renewed_at)
                VALUES (\(request.account), \(request.key), \(request.generationID), 'pending', \(unescaped: Self.databaseNow),
                        \(request.fingerprint), \(unescaped: Self.databaseNow))
                ON CONFLICT DO NOTHING
                """, logger: logger)
            guard let row = try await Self.rows(connection.query("""
                SELECT generation_id, status, response, fingerprint,
                  COALESCE(renewed_at, created_at) < \(unescaped: Self.databaseNow) - \(Int64(request.staleAfter * 1000)) AS stale
                FROM idempotent_requests WHERE account_id = \(request.account) AND key = \(request.key) FOR UPDATE
                """, logger: logger)).first
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
            try await connection.query("""
                UPDATE idempotent_requests SET generation_id = \(request.generationID), fingerprint = \(request.fingerprint),
                  renewed_at = \(unescaped: Self.databaseNow)
                WHERE account_id = \(request.account) AND key = \(request.key)
                """, logger: logger)
            return .claimed
        }
    }

    public func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool {
        !(try await Self.rows(client.query("""
            UPDATE idempotent_requests SET renewed_at = \(unescaped: Self.databaseNow)
            WHERE account_id = \(account) AND key = \(key) AND generation_id = \(generationID) AND status = 'pending' RETURNING 1
            """, logger: logger))).isEmpty
    }

    public func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws {
        try await client.query("""
            DELETE FROM idempotent_requests
            WHERE account_id = \(account) AND key = \(key) AND generation_id = \(generationID) AND status = 'pending'
            """, logger: logger)
    }

    public func openLeaseAmount(id: String) async throws -> Money? {
        try await Self.rows(client.query("SELECT amount FROM holds WHERE id = \(id) AND status = 'pending'", logger: logger)).first
            .map { Money(nanos: try $0["amount"].decode(Int64.self)) }
    }

    public func voidLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int {
        let logger = self.logger
        let (prefix, before) = ("lease:\(nodeID):", Self.millis(createdBefore))
        return try await transaction { connection in
            let ids = try await Self.rows(connection.query("""
                SELECT id FROM holds WHERE status = 'pending' AND starts_with(id, \(prefix)) AND created_at < \(before)
                ORDER BY id FOR UPDATE SKIP LOCKED
                """, logger: logger)).map { try $0["id"].decode(String.self) }
            var deltas = BalanceDeltas()
            for id in ids { try await Self.closeHold(connection, id: id, status: .voided, deltas: &deltas, logger: logger) }
            try await deltas.apply(connection, logger: logger)
            return ids.count
        }
    }

    public func expireHolds() async throws -> Int {
        let logger = self.logger
        return try await transaction { connection in
            let ids = try await Self.rows(connection.query(
                "SELECT id FROM holds WHERE status = 'pending' AND expires_at < \(unescaped: Self.databaseNow) FOR UPDATE SKIP LOCKED",
                logger: logger))
                .map { try $0["id"].decode(String.self) }
            var deltas = BalanceDeltas()
            for id in ids { try await Self.closeHold(connection, id: id, status: .voided, deltas: &deltas, logger: logger) }
            try await deltas.apply(connection, logger: logger)
            return ids.count
        }
    }

    // MARK: Queries

    public func balance(account: String) async throws -> AccountBalance {
        guard let row = try await Self.rows(client.query(
            "SELECT balance, held FROM balances WHERE account_id = \(account)", logger: logger)).first
        else { throw LedgerError.unknownAccount(account) }
        let balance = try row["balance"].decode(Int64.self)
        let held = try row["held"].decode(Int64.self)
        return AccountBalance(balance: Money(nanos: balance), available: Money(nanos: balance - held))
    }

    static func query(_ sql: String, _ values: [EntryQuery.Value]) throws -> PostgresQuery {
        var bindings = PostgresBindings()
        for value in values {
            switch value {
            case .text(let text): bindings.append(text)
            case .integer(let number): bindings.append(number)
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: bindings)
    }

    public func entries(_ query: EntryQuery) async throws -> [LedgerEntry] {
        let (conditions, values) = query.conditions { "$\($0)" }
        let sql = """
            SELECT t.id, t.idempotency_key, t.debit_account, t.credit_account, t.amount, t.kind, t.key_id, t.generation_id,
              t.memo, t.created_at, g.model
            FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
            WHERE \(conditions) ORDER BY t.id DESC LIMIT \(max(0, query.limit))
            """
        return try await Self.rows(client.query(Self.query(sql, values), logger: logger)).map { row in
            LedgerEntry(transfer: Transfer(
                id: try row["id"].decode(Int64.self), idempotencyKey: try row["idempotency_key"].decode(String.self),
                debitAccount: try row["debit_account"].decode(String.self), creditAccount: try row["credit_account"].decode(String.self),
                amount: Money(nanos: try row["amount"].decode(Int64.self)),
                kind: TransferKind(rawValue: try row["kind"].decode(String.self)) ?? .adjustment,
                keyID: try row["key_id"].decode(String?.self), generationID: try row["generation_id"].decode(String?.self),
                memo: try row["memo"].decode(String?.self), createdAt: Self.date(try row["created_at"].decode(Int64.self))),
                model: try row["model"].decode(String?.self))
        }
    }

    public func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow] {
        var charges = query
        charges.kind = .charge
        let (conditions, values) = charges.conditions { "$\($0)" }
        let group = switch grouping {
        case .day: "to_char(to_timestamp(t.created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        case .model: "COALESCE(g.model, '')"
        case .provider: "REPLACE(t.credit_account, 'provider:', '')"
        case .key: "COALESCE(t.key_id, '')"
        case .account: "t.debit_account"
        }
        let sql = """
            SELECT \(group) AS grp, SUM(t.amount)::BIGINT AS amount, COUNT(*)::BIGINT AS requests
            FROM transfers t LEFT JOIN generations g ON g.id = t.generation_id
            WHERE \(conditions) GROUP BY grp ORDER BY amount DESC, grp
            """
        return try await Self.rows(client.query(Self.query(sql, values), logger: logger)).map {
            SpendRow(group: try $0["grp"].decode(String.self), amount: Money(nanos: try $0["amount"].decode(Int64.self)),
                     requests: Int(try $0["requests"].decode(Int64.self)))
        }
    }

    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        let credits = try await Self.int(client.query("""
            SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE credit_account = \(account) AND kind IN ('purchase', 'grant', 'refund')
            """, logger: logger))
        let usage = try await Self.int(client.query(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE debit_account = \(account) AND kind = 'charge'", logger: logger))
        return (Money(nanos: credits), Money(nanos: usage))
    }

    public func purchasedTotal(account: String) async throws -> Money {
        Money(nanos: try await Self.int(client.query(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM transfers WHERE credit_account = \(account) AND kind = 'purchase'", logger: logger)))
    }

    /// Checks every invariant in one snapshot (a read-only REPEATABLE READ transaction), a page
    /// of rows per statement, so no statement holds the database for long.
    public func verify() async throws -> LedgerVerification {
        let logger = self.logger
        return try await client.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                let result = try await Self.verify(connection, logger: logger)
                try await connection.query("COMMIT", logger: logger)
                return result
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    static func verify(_ connection: PostgresConnection, logger: Logger) async throws -> LedgerVerification {
        var result = LedgerVerification()
        var lastAccount = ""
        while true {
            let rows = try await Self.rows(connection.query("""
                SELECT b.account_id, b.balance, b.held,
                  (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE credit_account = b.account_id)::BIGINT
                  - (SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE debit_account = b.account_id)::BIGINT AS derived,
                  (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = b.account_id AND status = 'pending')::BIGINT AS derived_held
                FROM balances b WHERE b.account_id > \(lastAccount) ORDER BY b.account_id LIMIT 1000
                """, logger: logger))
            guard let last = rows.last else { break }
            for row in rows {
                result.account(try row["account_id"].decode(String.self), balance: try row["balance"].decode(Int64.self),
                               held: try row["held"].decode(Int64.self), derivedBalance: try row["derived"].decode(Int64.self),
                               derivedHeld: try row["derived_held"].decode(Int64.self))
            }
            lastAccount = try last["account_id"].decode(String.self)
        }
        var lastGeneration = ""
        while true {
            // One page of generations joined to their transfers (by the generation index): a plan
            // that stays a page's work whatever the planner knows about the tables.
            let rows = try await Self.rows(connection.query("""
                WITH page AS (SELECT id, cost, attempts FROM generations WHERE id > \(lastGeneration) ORDER BY id LIMIT 2000)
                SELECT p.id, p.cost, p.attempts,
                  COALESCE(SUM(t.amount) FILTER (WHERE t.kind = 'charge'), 0)::BIGINT AS charged,
                  COALESCE(SUM(t.amount) FILTER (WHERE t.kind IN ('charge', 'overage', 'insurance')
                                                   AND t.credit_account LIKE 'provider:%'), 0)::BIGINT AS payable
                FROM page p LEFT JOIN LATERAL (SELECT amount, kind, credit_account FROM transfers WHERE generation_id = p.id) t ON true
                GROUP BY p.id, p.cost, p.attempts ORDER BY p.id
                """, logger: logger))
            guard let last = rows.last else { break }
            for row in rows {
                result.generation(try row["id"].decode(String.self), cost: try row["cost"].decode(Int64.self),
                                  charged: try row["charged"].decode(Int64.self), payable: try row["payable"].decode(Int64.self),
                                  attempts: try row["attempts"].decode(String.self))
            }
            lastGeneration = try last["id"].decode(String.self)
        }
        func ids(_ sql: PostgresQuery) async throws -> [String] {
            try await Self.rows(connection.query(sql, logger: logger)).map { "entry \(try $0["id"].decode(Int64.self))" }
        }
        let orphanCharges = try await ids("""
            SELECT id FROM transfers t WHERE kind = 'charge'
              AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
            """)
        let orphanPayables = try await ids("""
            SELECT id FROM transfers t WHERE kind IN ('charge', 'overage', 'insurance') AND credit_account LIKE 'provider:%'
              AND (generation_id IS NULL OR NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = t.generation_id)) LIMIT 10000
            """)
        let grace = Int64(LedgerVerification.expiryGrace * 1000)
        let expired = try await Self.rows(connection.query("""
            SELECT id FROM holds WHERE status = 'pending' AND expires_at < \(unescaped: databaseNow) - \(grace) LIMIT 10000
            """, logger: logger)).map { try $0["id"].decode(String.self) }
        let count = try await Self.int(connection.query("SELECT COUNT(*)::BIGINT FROM transfers", logger: logger))
        result.finish(transfers: Int(count), orphanCharges: orphanCharges, orphanPayables: orphanPayables, expiredHolds: expired)
        return result
    }

    // MARK: Keys

    public func insertKey(_ key: KeyRecord) async throws {
        try await requireAccounts([key.accountID])
        let logger = self.logger
        try await transaction { connection in
            let (limit, expires, created) = (key.limit?.nanos, key.expiresAt.map(Self.millis), Self.millis(key.createdAt))
            try await connection.query("""
                INSERT INTO api_keys (id, account_id, hash, label, name, is_admin, disabled, limit_nanos, limit_reset, expires_at,
                                      created_at, region)
                VALUES (\(key.id), \(key.accountID), \(key.hash), \(key.label), \(key.name), \(key.isAdmin), \(key.disabled),
                        \(limit), \(key.limitReset), \(expires), \(created), \(key.region))
                ON CONFLICT (hash) DO NOTHING
                """, logger: logger)
        }
    }

    static let keyColumns = """
        k.id, k.account_id, k.hash, k.label, k.name, k.is_admin, k.disabled, k.limit_nanos, k.limit_reset, k.expires_at, k.created_at,
        k.region, a.region AS account_region
        """
    static let keyFrom = "api_keys k JOIN accounts a ON a.id = k.account_id"

    static func keyRecord(_ row: PostgresRandomAccessRow) throws -> KeyRecord {
        KeyRecord(
            id: try row["id"].decode(String.self), accountID: try row["account_id"].decode(String.self),
            hash: try row["hash"].decode(String.self), label: try row["label"].decode(String.self),
            name: try row["name"].decode(String.self), isAdmin: try row["is_admin"].decode(Bool.self),
            disabled: try row["disabled"].decode(Bool.self),
            limit: try row["limit_nanos"].decode(Int64?.self).map { Money(nanos: $0) },
            limitReset: try row["limit_reset"].decode(String?.self),
            expiresAt: try row["expires_at"].decode(Int64?.self).map(date), createdAt: date(try row["created_at"].decode(Int64.self)),
            region: try row["region"].decode(String?.self), accountRegion: try row["account_region"].decode(String?.self))
    }

    public func key(hash: String) async throws -> KeyRecord? {
        try await Self.rows(client.query(
            "SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.hash = \(hash)", logger: logger)).first.map(Self.keyRecord)
    }

    public func keys(account: String) async throws -> [KeyRecord] {
        try await Self.rows(client.query(
            "SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.account_id = \(account) ORDER BY k.created_at", logger: logger))
            .map(Self.keyRecord)
    }

    public func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord? {
        let logger = self.logger
        return try await transaction { connection in
            if let name { try await connection.query("UPDATE api_keys SET name = \(name) WHERE hash = \(hash)", logger: logger) }
            if let disabled { try await connection.query("UPDATE api_keys SET disabled = \(disabled) WHERE hash = \(hash)", logger: logger) }
            if let limit {
                let nanos = limit?.nanos
                try await connection.query("UPDATE api_keys SET limit_nanos = \(nanos) WHERE hash = \(hash)", logger: logger)
            }
            if let limitReset {
                try await connection.query("UPDATE api_keys SET limit_reset = \(limitReset) WHERE hash = \(hash)", logger: logger)
            }
            return try await Self.rows(connection.query(
                "SELECT \(unescaped: Self.keyColumns) FROM \(unescaped: Self.keyFrom) WHERE k.hash = \(hash)", logger: logger)).first.map(Self.keyRecord)
        }
    }

    public func setRegion(account: String, region: String?) async throws -> Bool {
        !(try await Self.rows(client.query(
            "UPDATE accounts SET region = \(region) WHERE id = \(account) AND NOT is_system RETURNING id", logger: logger))).isEmpty
    }

    public func setRegion(keyHash: String, region: String?) async throws -> KeyRecord? {
        try await client.query("UPDATE api_keys SET region = \(region) WHERE hash = \(keyHash)", logger: logger)
        return try await key(hash: keyHash)
    }

    public func deleteKey(hash: String) async throws -> Bool {
        !(try await Self.rows(client.query("DELETE FROM api_keys WHERE hash = \(hash) RETURNING id", logger: logger))).isEmpty
    }

    public func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool {
        let updated = try await Self.rows(client.query(
            "UPDATE api_keys SET disabled = \(disabled) WHERE id = \(id) RETURNING id", logger: logger))
        return !updated.isEmpty
    }

    public func keyUsage(keyID: String, now: Date) async throws -> KeyUsage {
        let windows = UsageWindows(now: now)
        let (day, week, month) = (Self.millis(windows.day), Self.millis(windows.week), Self.millis(windows.month))
        guard let row = try await Self.rows(client.query("""
            SELECT COALESCE(SUM(amount), 0)::BIGINT AS total,
              COALESCE(SUM(CASE WHEN created_at >= \(day) THEN amount END), 0)::BIGINT AS daily,
              COALESCE(SUM(CASE WHEN created_at >= \(week) THEN amount END), 0)::BIGINT AS weekly,
              COALESCE(SUM(CASE WHEN created_at >= \(month) THEN amount END), 0)::BIGINT AS monthly
            FROM transfers WHERE key_id = \(keyID) AND kind = 'charge'
            """, logger: logger)).first else { return KeyUsage() }
        func money(_ name: String) throws -> Money { Money(nanos: try row[name].decode(Int64.self)) }
        return KeyUsage(total: try money("total"), daily: try money("daily"), weekly: try money("weekly"), monthly: try money("monthly"))
    }

    // MARK: Generations

    public func freeRequestCount(account: String, since: [Date]) async throws -> [Int] {
        var counts: [Int] = []
        for start in since {
            counts.append(Int(try await Self.int(client.query("""
                SELECT COUNT(*)::BIGINT FROM generations WHERE account_id = \(account) AND created_at >= \(Self.millis(start))
                  AND model LIKE '%:free'
                """, logger: logger))))
        }
        return counts
    }

    public func generation(id: String) async throws -> GenerationRecord? {
        guard let row = try await Self.rows(client.query("SELECT * FROM generations WHERE id = \(id)", logger: logger)).first else {
            return nil
        }
        let attempts = (try? JSONDecoder().decode([AttemptRecord].self, from: Data(try row["attempts"].decode(String.self).utf8))) ?? []
        func int(_ name: String) throws -> Int { Int(try row[name].decode(Int64.self)) }
        return GenerationRecord(
            id: id, accountID: try row["account_id"].decode(String.self), keyID: try row["key_id"].decode(String?.self),
            model: try row["model"].decode(String.self), providerName: try row["provider_name"].decode(String?.self),
            providerTag: try row["provider_tag"].decode(String?.self), upstreamID: try row["upstream_id"].decode(String?.self),
            streamed: try row["streamed"].decode(Bool.self), cancelled: try row["cancelled"].decode(Bool.self),
            finishReason: try row["finish_reason"].decode(String?.self), nativeFinishReason: try row["native_finish_reason"].decode(String?.self),
            usage: TokenUsage(promptTokens: try int("tokens_prompt"), completionTokens: try int("tokens_completion"),
                              cachedTokens: try int("tokens_cached"), cacheWriteTokens: try int("tokens_cache_write"),
                              reasoningTokens: try int("tokens_reasoning")),
            cost: Money(nanos: try row["cost"].decode(Int64.self)), latencyMs: try int("latency_ms"),
            generationTimeMs: try int("generation_time_ms"), attempts: attempts,
            createdAt: Self.date(try row["created_at"].decode(Int64.self)))
    }
}

/// A settlement batch as `signalbox_settle_rows` takes it: one array per column, in the
/// function's parameter order. An absent optional text is '' (the function stores NULL).
struct SettleRows {
    static let parameterCount = 37
    static let statement = "SELECT signalbox_settle_rows("
        + (1...parameterCount).map { "$\($0)" }.joined(separator: ", ") + ") AS outcome"

    private(set) var bindings = PostgresBindings(capacity: parameterCount)

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
