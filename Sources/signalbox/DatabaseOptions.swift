import ArgumentParser
import Foundation
import Ledger

/// How `serve`, `migrate` and the admin commands reach the PostgreSQL ledger. TLS comes from the
/// URL's `sslmode` (and `sslrootcert`), as with libpq; the flags override the configuration file.
struct DatabaseOptions: ParsableArguments {
    @Option(
        help:
            "PostgreSQL ledger: postgres://user:password@host:port/db[?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=FILE] (default: SIGNALBOX_DATABASE_URL)."
    )
    var databaseURL: String?
    @Option(
        help: "PEM CA certificate(s) the server's certificate must chain to (sslmode=verify-ca or verify-full; the URL's sslrootcert wins)."
    )
    var databaseCaFile: String?
    @Option(help: "Connections to the ledger at most (default 20).") var databasePoolSize: Int?
    @Option(help: "Seconds one connection (TCP, TLS, sign-in) may take before the attempt fails (default 10).")
    var databaseConnectTimeout: Int?
    @Option(help: "Seconds a statement may run before the server cancels it (default: 3 for serve, none for commands).")
    var databaseStatementTimeout: Int?

    /// The URL from the flag, else the environment, else the configuration file.
    func url(file: ConfigFile.Database? = nil) -> String? {
        databaseURL ?? ProcessInfo.processInfo.environment["SIGNALBOX_DATABASE_URL"] ?? file?.url
    }

    /// The ledger's connection settings, or nil when no PostgreSQL ledger is configured.
    /// `statementTimeout` is the default when neither the flag nor the file sets one.
    func settings(file: ConfigFile.Database? = nil, statementTimeout: Duration?) throws -> PostgresSettings? {
        guard let url = url(file: file) else { return nil }
        var settings: PostgresSettings
        do { settings = try PostgresSettings(url: url) } catch { throw ValidationError("\(error)") }
        settings.statementTimeout = statementTimeout
        if settings.rootCertificateFile == nil, let ca = databaseCaFile ?? file?.caFile { settings.rootCertificateFile = ca }
        if let size = databasePoolSize ?? file?.poolSize {
            guard (1...1000).contains(size) else { throw ValidationError("--database-pool-size must be between 1 and 1000; got \(size)") }
            settings.poolSize = size
        }
        if let seconds = databaseConnectTimeout ?? file?.connectTimeoutSeconds {
            guard (1...600).contains(seconds) else {
                throw ValidationError("--database-connect-timeout must be between 1 and 600 seconds; got \(seconds)")
            }
            settings.connectTimeout = .seconds(seconds)
        }
        if let seconds = databaseStatementTimeout ?? file?.statementTimeoutSeconds {
            guard seconds >= 0 else { throw ValidationError("--database-statement-timeout must be 0 (none) or more seconds") }
            settings.statementTimeout = seconds == 0 ? nil : .seconds(seconds)
        }
        return settings
    }
}
