import ArgumentParser
import Foundation
import Ledger
import Logging
import PostgresNIO

/// `signalbox migrate`: creates or upgrades the PostgreSQL ledger schema (idempotent, safe to
/// run from several nodes at once).
struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Create or upgrade the PostgreSQL ledger schema.")

    @OptionGroup var database: DatabaseOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        guard let settings = try database.settings(statementTimeout: nil) else {
            throw ValidationError("--database-url or SIGNALBOX_DATABASE_URL is required")
        }
        let version = try await PostgresLedgerStore.withStore(settings: settings) { try await $0.schemaVersion() }
        print(json ? #"{"schema_version": \#(version)}"# : "Ledger schema is at version \(version).")
    }
}
