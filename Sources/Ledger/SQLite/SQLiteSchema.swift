import Foundation
import GRDB
import Logging
import SignalboxCore

extension SQLiteLedgerStore {
    // MARK: Schema

    static let migrations: [(String, String)] = [
        (
            "v1",
            """
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
            """
        ),
        (
            "v2",
            """
            CREATE TABLE idempotent_requests (
                account_id TEXT NOT NULL, key TEXT NOT NULL, generation_id TEXT NOT NULL,
                status TEXT NOT NULL, response TEXT, created_at INTEGER NOT NULL,
                PRIMARY KEY (account_id, key));
            """
        ),
        ("v3", "CREATE INDEX generations_account ON generations(account_id, created_at);"),
        ("v4", "ALTER TABLE accounts ADD COLUMN region TEXT; ALTER TABLE api_keys ADD COLUMN region TEXT;"),
        // No customer balance below zero or below what it holds, and no balance that SQLite's
        // integer overflow turned into a REAL (Docs/ledger.md). Triggers, because SQLite cannot
        // add a CHECK to an existing table; `verify` reports rows from before the rule.
        (
            "v5",
            """
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
            """
        ),
        // Idempotency claims remember what was asked and when their owner last said it was alive.
        (
            "v6",
            """
            CREATE INDEX transfers_generation ON transfers(generation_id);
            ALTER TABLE idempotent_requests ADD COLUMN fingerprint TEXT;
            ALTER TABLE idempotent_requests ADD COLUMN renewed_at INTEGER;
            UPDATE idempotent_requests SET renewed_at = created_at;
            """
        ),
        // The ledger is append-only in the database, not only by convention (Docs/ledger.md).
        (
            "v7",
            """
            CREATE TRIGGER transfers_append_only_update BEFORE UPDATE ON transfers
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER transfers_append_only_delete BEFORE DELETE ON transfers
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER accounts_never_removed BEFORE DELETE ON accounts
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER accounts_never_renamed BEFORE UPDATE OF id ON accounts
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            """
        ),
        // Roles for admin keys, the audit trail (append-only like the transfers), single-sign-on
        // role mappings, and an index for the console's ledger filtered by kind.
        (
            "v8",
            """
            ALTER TABLE api_keys ADD COLUMN admin_role TEXT;
            CREATE TABLE audit_log (
                id INTEGER PRIMARY KEY AUTOINCREMENT, created_at INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT,
                action TEXT NOT NULL, target TEXT NOT NULL, before_state TEXT, after_state TEXT, node TEXT NOT NULL,
                source_address TEXT);
            CREATE INDEX audit_log_created ON audit_log(created_at);
            CREATE INDEX audit_log_actor ON audit_log(actor, id);
            CREATE INDEX audit_log_action ON audit_log(action, id);
            CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'signalbox:append-only'); END;
            CREATE TABLE role_mappings (claim TEXT NOT NULL, value TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (claim, value));
            CREATE INDEX transfers_kind ON transfers(kind, id);
            """
        ),
    ]

    public func migrate() async throws {
        var migrator = DatabaseMigrator()
        for (name, sql) in Self.migrations {
            migrator.registerMigration(name) { db in try db.execute(sql: sql) }
        }
        // A ledger file migrated by a newer binary: this one would write rows that schema may refuse or misread.
        let known = migrator
        let applied = try await database.read { db in try known.hasBeenSuperseded(db) ? try known.appliedIdentifiers(db).count : nil }
        if let applied { throw LedgerError.schemaNewer(found: applied, known: Self.migrations.count) }
        try migrator.migrate(database)
        try await write { db in
            for id in Billing.SystemAccount.all { try Self.ensureAccount(db, id: id, name: id, isSystem: true) }
        }
    }

    /// A write transaction whose broken ledger rules come out as the refusals they are.
}
