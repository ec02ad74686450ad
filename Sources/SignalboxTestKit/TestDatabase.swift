import Foundation
import Ledger
import PostgresNIO

/// Throwaway PostgreSQL databases for tests, on the server at `SIGNALBOX_TEST_DATABASE_URL`
/// (which `.ci/run` starts).
public enum TestDatabase {
    public static var url: String? { ProcessInfo.processInfo.environment["SIGNALBOX_TEST_DATABASE_URL"] }

    /// True when PostgreSQL-backed tests must run: a database is configured, or this is CI, where
    /// a missing database has to fail the run instead of skipping those tests.
    public static var required: Bool { url != nil || ProcessInfo.processInfo.environment["CI"] != nil }

    /// Runs `body` with a migrated `PostgresLedgerStore` on a fresh database, dropped afterwards.
    public static func withFreshLedger(_ body: (PostgresLedgerStore) async throws -> Void) async throws {
        guard let url else {
            throw LedgerError.storage("PostgreSQL-backed tests need SIGNALBOX_TEST_DATABASE_URL (CI sets it)")
        }
        let name = "signalbox_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
        let server = try PostgresLedgerStore.configuration(url: url, statementTimeout: nil)  // CREATE/DROP DATABASE may take seconds
        let serving = try PostgresLedgerStore.configuration(url: url)
        try await withClient(server) { admin in try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)")) }
        var configuration = serving  // the store runs as a serving node does, with its statement timeout
        configuration.database = name
        do {
            try await withClient(configuration) { client in
                let store = PostgresLedgerStore(client: client)
                try await store.migrate()
                try await body(store)
            }
        } catch {
            try? await withClient(server) { try await $0.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) }
            throw error
        }
        try await withClient(server) { try await $0.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) }
    }

    /// Runs `body` with the URL of a fresh, empty database (not migrated), dropped afterwards.
    public static func withFreshDatabase(_ body: (String) async throws -> Void) async throws {
        guard let url, var components = URLComponents(string: url) else {
            throw LedgerError.storage("PostgreSQL-backed tests need SIGNALBOX_TEST_DATABASE_URL (CI sets it)")
        }
        let name = "signalbox_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
        let server = try PostgresLedgerStore.configuration(url: url, statementTimeout: nil)
        try await withClient(server) { admin in try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)")) }
        components.path = "/" + name
        do {
            try await body(components.string ?? url)
        } catch {
            try? await withClient(server) { try await $0.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) }
            throw error
        }
        try await withClient(server) { try await $0.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)")) }
    }

    static func withClient(_ configuration: PostgresClient.Configuration, _ body: (PostgresClient) async throws -> Void) async throws {
        let client = PostgresClient(configuration: configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await body(client)
        }
    }
}
