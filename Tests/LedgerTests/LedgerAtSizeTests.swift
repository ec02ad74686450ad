import Foundation
@testable import Ledger
import PostgresNIO
import SignalboxCore
import SignalboxTestKit
import Testing

/// The console's ledger page on a ledger of production size: with 100,000 entries each page is
/// read from an index, newest first, and holds at most the page size.
@Suite(.enabled(if: TestDatabase.required, "no PostgreSQL configured")) struct LedgerAtSizeTests {
    static let entries = 100_000

    @Test func everyFilteredPageIsReadFromAnIndexWithAHundredThousandEntries() async throws {
        try await TestDatabase.withFreshLedger { store in
            try await store.createAccount(id: "acct", name: "A")
            try await store.createAccount(id: "other", name: "B")
            try await grant(store, "acct", "1")
            try await store.post([charge("g0", account: "acct", "0.000001")])  // makes provider:alpha
            // 100,000 entries in one statement: grants to two accounts and charges from one, over ten keys.
            try await store.client.query(
                """
                INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, key_id, created_at)
                SELECT 'bulk:' || n,
                  CASE WHEN n % 3 = 0 THEN 'acct' ELSE 'platform:grants' END,
                  CASE WHEN n % 3 = 0 THEN 'provider:alpha' WHEN n % 2 = 0 THEN 'acct' ELSE 'other' END,
                  1000, CASE WHEN n % 3 = 0 THEN 'charge' ELSE 'grant' END, 'k' || (n % 10), 1700000000000 + n
                FROM generate_series(1, \(Self.entries)) AS n
                """, logger: store.logger)
            try await store.client.query("ANALYZE transfers", logger: store.logger)
            let total = try await PostgresLedgerStore.int(
                store.client.query("SELECT COUNT(*)::BIGINT FROM transfers", logger: store.logger))
            #expect(total > Int64(Self.entries))

            let first = try await store.entries(EntryQuery(limit: 50))
            #expect(first.count == 50 && first.map(\.transfer.id) == first.map(\.transfer.id).sorted(by: >))
            var second = EntryQuery(limit: 50)
            second.before = first.last?.transfer.id
            let queries: [(String, EntryQuery)] = [
                ("newest", EntryQuery(limit: 50)), ("next page", second), ("account", EntryQuery(account: "acct", limit: 50)),
                ("kind", EntryQuery(kind: .charge, limit: 50)), ("key", EntryQuery(keyID: "k3", limit: 50)),
                ("account and kind", EntryQuery(account: "other", kind: .grant, limit: 50)),
            ]
            for (name, query) in queries {
                let page = try await store.entries(query)
                #expect(page.count == 50, "\(name): a full page, and no more")
                let statement = try PostgresLedgerStore.entriesStatement(query)
                let plan = try await PostgresLedgerStore.rows(
                    store.client.query(PostgresQuery(unsafeSQL: "EXPLAIN " + statement.sql, binds: statement.binds), logger: store.logger)
                ).map { try $0["QUERY PLAN"].decode(String.self) }.joined(separator: "\n")
                #expect(!plan.contains("Seq Scan on transfers"), "\(name) reads every entry:\n\(plan)")
                #expect(plan.contains("Index"), "\(name) uses no index:\n\(plan)")
            }
        }
    }
}
