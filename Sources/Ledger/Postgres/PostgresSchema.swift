import Foundation
import Logging
import NIOConcurrencyHelpers
import PostgresNIO
import SignalboxCore

extension PostgresLedgerStore {
    // MARK: Schema

    /// Versioned migrations; each version's statements run in one transaction.
    static let migrations: [(version: Int, statements: [String])] = [
        (
            1,
            [
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
            ]
        ),
        (2, ["CREATE INDEX generations_account ON generations(account_id, created_at)"]),
        (3, ["ALTER TABLE accounts ADD COLUMN region TEXT", "ALTER TABLE api_keys ADD COLUMN region TEXT"]),
        (
            4,
            [
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
            ]
        ),
        (5, [settleFunction]),  // (also re-created on every migrate, below)
        (6, ["CREATE INDEX transfers_generation ON transfers(generation_id)"]),
        // Ids and keys compare byte by byte, whatever the database's default collation: no
        // lookup, join or lock order needs a language's ordering, and "C" is several times cheaper
        // in every index the hot path writes. (Rewrites these tables once; see Docs/ledger.md.)
        (
            7,
            [
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
            ]
        ),
        // The ledger is append-only in the database, not only by convention; and a transfer's
        // accounts are checked once per statement instead of by two row-level foreign keys (their
        // triggers were a fifth of the settlement's cost). Accounts are never deleted or renamed,
        // so a check without a row lock cannot race a delete.
        (
            8,
            [
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
            ]
        ),
        // Roles for admin keys; the audit trail, append-only like the transfers; single-sign-on
        // role mappings; and an index for the console's ledger filtered by kind.
        (
            9,
            [
                "ALTER TABLE api_keys ADD COLUMN admin_role TEXT",
                """
                CREATE TABLE audit_log (id BIGSERIAL PRIMARY KEY, created_at BIGINT NOT NULL, actor TEXT COLLATE "C" NOT NULL, role TEXT,
                    action TEXT COLLATE "C" NOT NULL, target TEXT COLLATE "C" NOT NULL, before_state TEXT, after_state TEXT,
                    node TEXT NOT NULL, source_address TEXT)
                """,
                "CREATE INDEX audit_log_created ON audit_log(created_at)",
                "CREATE INDEX audit_log_actor ON audit_log(actor, id)",
                "CREATE INDEX audit_log_action ON audit_log(action, id)",
                "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION signalbox_refuse_change()",
                #"CREATE TABLE role_mappings (claim TEXT COLLATE "C" NOT NULL, value TEXT COLLATE "C" NOT NULL, role TEXT NOT NULL, PRIMARY KEY (claim, value))"#,
                "CREATE INDEX transfers_kind ON transfers(kind, id)",
            ]
        ),
    ]

    /// A whole settlement batch in one statement, so it costs one round trip whatever accounts
    /// and idempotency keys it touches. It handles the common case — every settlement new, on an
    /// open lease, its claim still its own, its transfers new — and otherwise answers `slow` (or
    /// raises `signalbox:slow`, undoing the statement); the store then runs the general path
    /// (`settleBatch`). Shared rows are locked in a fixed order (claims by account and key, leases
    /// by id, balances by account), as the general path does, and as late as possible.
    ///
    /// Rows arrive as one array per column (`SettleRows`), sent in PostgreSQL's binary format:
    /// nothing to parse, where a JSON document cost a fifth of the statement. PostgresNIO's array
    /// encoder has no NULL element, so an absent optional text travels as '' and is stored as NULL
    /// (a batch holding a present-but-empty one takes the general path).
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
        do {
            try await migrateInTransaction()
        } catch let error as PostgresTransactionError {
            if let refusal = error.closureError as? LedgerError { throw refusal }
            throw error
        }
    }

    private func migrateInTransaction() async throws {
        try await client.withTransaction(logger: logger) { connection in
            // One migrator at a time across the cluster, however long the others take.
            try await connection.query("SET LOCAL statement_timeout = 0", logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(7215043)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)", logger: logger)
            let current = try await Self.int(
                connection.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", logger: logger))
            // A newer binary migrated this database: this one would write rows that schema may refuse or misread.
            guard current <= Self.latestVersion else { throw LedgerError.schemaNewer(found: Int(current), known: Self.latestVersion) }
            for migration in Self.migrations where migration.version > current {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schema_migrations (version) VALUES (\(migration.version))", logger: logger)
            }
            // The settle function is replaced on every migrate, so a newer binary's version is the one that runs.
            try await connection.query(PostgresQuery(unsafeSQL: Self.settleFunction), logger: logger)
            for id in Billing.SystemAccount.all {
                try await Self.ensureAccount(connection, id: id, name: id, isSystem: true, logger: logger)
            }
        }
    }

    /// The newest schema version this binary knows.
    public static var latestVersion: Int { migrations.map(\.version).max() ?? 0 }

    /// The schema version this database is at.
    public func schemaVersion() async throws -> Int {
        Int(try await Self.int(client.query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations", logger: logger)))
    }
}
