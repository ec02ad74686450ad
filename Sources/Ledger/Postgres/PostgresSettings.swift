import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// How a node or a command reaches the PostgreSQL ledger: the URL's parts, TLS, the pool and its
/// timeouts. Built from a `postgres://user:password@host:port/database?sslmode=…&sslrootcert=…`
/// URL and the operator's flags or configuration keys; `description` never shows the password.
public struct PostgresSettings: Sendable, CustomStringConvertible {
    /// TLS as libpq's `sslmode` names it.
    public enum TLSMode: String, Sendable, CaseIterable {
        /// Plain TCP.
        case disable
        /// TLS when the server offers it (certificate not checked), plain otherwise: libpq's default.
        case prefer
        /// TLS or no connection; the certificate is not checked (encryption without authentication).
        case require
        /// TLS, with the server's certificate chain checked against the root CA (not its name).
        case verifyCA = "verify-ca"
        /// TLS, with the chain and the server's name (the URL's host) checked.
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String?
    public var tlsMode: TLSMode = .prefer
    /// PEM file of the CA(s) the server's certificate must chain to (`sslrootcert`); nil uses the
    /// system's trust roots. Only `verify-ca` and `verify-full` read it.
    public var rootCertificateFile: String?
    /// Connections the pool keeps at most.
    public var poolSize = 20
    /// How long making one connection (TCP, TLS and sign-in) may take.
    public var connectTimeout: Duration = .seconds(10)
    /// The server cancels a statement running longer, and ends a transaction left idle that long;
    /// nil for tools that may run long statements (migrations, the CLI's reports).
    public var statementTimeout: Duration?

    /// The URL's query parameters this reads; any other is an error (a misspelt `sslmode` must
    /// not quietly mean "no TLS").
    public static let urlParameters = ["sslmode", "sslrootcert", "connect_timeout", "application_name"]
    public var applicationName = "signalbox"

    /// Parses a `postgres://` (or `postgresql://`) URL. The error names what is wrong, never the password.
    public init(url: String) throws {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty
        else { throw PostgresURLError(description: "not a postgres://user:password@host:port/database URL: \(Self.redacted(url))") }
        self.host = host
        port = components.port ?? 5432
        user = components.user.map { $0.removingPercentEncoding ?? $0 } ?? "postgres"
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? nil : path
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = TLSMode(rawValue: value) else {
                    throw PostgresURLError(
                        description:
                            "sslmode=\(value) in the database URL is not one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                tlsMode = mode
            case "sslrootcert": rootCertificateFile = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0 else {
                    throw PostgresURLError(description: "connect_timeout=\(value) in the database URL must be a whole number of seconds")
                }
                connectTimeout = .seconds(seconds)
            case "application_name": applicationName = value
            case "password", "user", "host", "port", "dbname":
                throw PostgresURLError(
                    description:
                        "the database URL gives \(item.name) as a parameter; write it in the URL itself (postgres://user:password@host:port/database)"
                )
            default:
                throw PostgresURLError(
                    description:
                        "the database URL has an unknown parameter \(item.name) (known: \(Self.urlParameters.joined(separator: ", ")))")
            }
        }
    }

    /// `postgres://user@host:port/database?sslmode=…`: the URL without its password.
    public var description: String {
        "postgres://\(user)@\(host):\(port)/\(database ?? "")?sslmode=\(tlsMode.rawValue)"
    }

    /// `url` with any password (in the authority or as a parameter) replaced by `***`, for
    /// messages about a URL that may not parse; a string that is not a URL is not echoed at all.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.scheme != nil else { return "(a value that is not a URL)" }
        if components.password != nil { components.password = "***" }
        components.queryItems = components.queryItems?.map { item in
            item.name.lowercased().contains("password") ? URLQueryItem(name: item.name, value: "***") : item
        }
        return components.string ?? "(a value that is not a URL)"
    }

    /// NIOSSL's configuration for `tlsMode`, or nil for `disable`.
    func tlsConfiguration() throws -> TLSConfiguration? {
        var tls = TLSConfiguration.makeClientConfiguration()
        // As libpq: `require` with a root certificate checks the chain (verify-ca).
        let mode = tlsMode == .require && rootCertificateFile != nil ? .verifyCA : tlsMode
        switch mode {
        case .disable: return nil
        case .prefer, .require: tls.certificateVerification = .none
        case .verifyCA: tls.certificateVerification = .noHostnameVerification
        case .verifyFull: tls.certificateVerification = .fullVerification
        }
        if [.verifyCA, .verifyFull].contains(mode), let file = rootCertificateFile {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(file))
            } catch {
                throw LedgerError.storage("sslrootcert \(file) is not a readable PEM certificate (\(error))")
            }
        }
        return tls
    }

    /// The pool's configuration.
    public func clientConfiguration() throws -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch (tlsMode, try tlsConfiguration()) {
            case (_, nil): .disable
            case (.prefer, let configuration?): .prefer(configuration)
            case (_, let configuration?): .require(configuration)
            }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.maximumConnections = poolSize
        configuration.options.connectTimeout = connectTimeout
        configuration.options.additionalStartupParameters = startupParameters
        return configuration
    }

    /// One connection's configuration (for `diagnose`), the same as the pool's.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS =
            switch (tlsMode, try tlsConfiguration()) {
            case (_, nil): .disable
            case (.prefer, let configuration?): .prefer(try NIOSSLContext(configuration: configuration))
            case (_, let configuration?): .require(try NIOSSLContext(configuration: configuration))
            }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = TimeAmount(connectTimeout)
        configuration.options.additionalStartupParameters = startupParameters
        return configuration
    }

    private var startupParameters: [(String, String)] {
        var parameters = [("application_name", applicationName)]
        // A statement or an abandoned transaction outlives no client deadline (settlements give
        // up after 3 s): the server cancels it and frees its row locks instead of holding them.
        if let statementTimeout {
            let millis = String(
                statementTimeout.components.seconds * 1000 + statementTimeout.components.attoseconds / 1_000_000_000_000_000)
            parameters += [("statement_timeout", millis), ("idle_in_transaction_session_timeout", millis)]
        }
        return parameters
    }
}

/// A database URL that can't be used, and why (never with its password).
public struct PostgresURLError: Error, Sendable, CustomStringConvertible {
    public let description: String
}

/// Why a connection to the ledger failed, in words an operator can act on.
public struct PostgresConnectionProblem: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case authenticationFailed = "authentication failed"
        case databaseMissing = "database does not exist"
        case refused = "connection refused"
        case unreachable = "no answer"
        case tlsUnsupported = "TLS required"
        case tlsRejected = "TLS failed"
        case other = "connection failed"
    }

    public let kind: Kind
    public let message: String

    /// Authentication, a missing database and TLS don't fix themselves: retrying would only hide them.
    public var isPermanent: Bool { [.authenticationFailed, .databaseMissing, .tlsUnsupported, .tlsRejected].contains(kind) }

    public var description: String { message }
}

extension PostgresSettings {
    /// Opens one connection and closes it: nil when it works, else why not, within the connect
    /// timeout (plus the time the server takes to refuse a password).
    public func diagnose(logger: Logger = Logger(label: "signalbox.ledger")) async -> PostgresConnectionProblem? {
        let configuration: PostgresConnection.Configuration
        do { configuration = try connectionConfiguration() } catch {
            return PostgresConnectionProblem(kind: .other, message: "\(error)")
        }
        do {
            let connection = try await withThrowingTaskGroup(of: PostgresConnection?.self) { group in
                group.addTask {
                    try await PostgresConnection.connect(
                        on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration, id: 0, logger: logger)
                }
                group.addTask {
                    try await Task.sleep(for: connectTimeout + .seconds(1))
                    return nil
                }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
            guard let connection else { return problem(.unreachable, "did not answer within \(connectTimeout)") }
            try? await connection.close()
            return nil
        } catch {
            return explain(error)
        }
    }

    /// What a connection error means.
    public func explain(_ error: any Error) -> PostgresConnectionProblem {
        if let psql = error as? PSQLError {
            if let state = psql.serverInfo?[.sqlState] {
                let serverMessage = psql.serverInfo?[.message] ?? ""
                switch state {
                case "28P01", "28000":
                    return problem(.authenticationFailed, "authentication failed for user \"\(user)\" (\(serverMessage))")
                case "3D000":
                    return problem(.databaseMissing, "database \"\(database ?? user)\" does not exist")
                case "53300": return problem(.other, "the server has no free connection slots (\(serverMessage))")
                case "57P03": return problem(.unreachable, "the server is starting up or shutting down (\(serverMessage))")
                default: return problem(.other, "the server refused the connection: \(serverMessage) (SQLSTATE \(state))")
                }
            }
            switch psql.code {
            case .sslUnsupported:
                return problem(.tlsUnsupported, "sslmode=\(tlsMode.rawValue) requires TLS, and the server does not offer it")
            case .authMechanismRequiresPassword:
                return problem(
                    .authenticationFailed, "authentication failed for user \"\(user)\": the server asks for a password and the URL has none"
                )
            case .unsupportedAuthMechanism, .saslError:
                return problem(.authenticationFailed, "authentication failed for user \"\(user)\" (\(psql.code))")
            case .connectionError, .failedToAddSSLHandler, .uncleanShutdown, .serverClosedConnection:
                if let underlying = psql.underlying { return explain(underlying) }
                return problem(
                    .unreachable,
                    "the connection closed before sign-in completed (is a PostgreSQL server listening there, and does its "
                        + "pg_hba.conf admit this client?)")
            default: return problem(.other, "\(psql.code)")
            }
        }
        if let ssl = error as? NIOSSLError {
            return problem(.tlsRejected, "the TLS handshake failed (sslmode=\(tlsMode.rawValue)): \(ssl)")
        }
        if let ssl = error as? BoringSSLError {
            return problem(.tlsRejected, "the TLS handshake failed (sslmode=\(tlsMode.rawValue)): \(ssl)")
        }
        let text = String(describing: error)
        if text.contains("connection refused") || text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            return problem(.refused, "connection refused: nothing listens there")
        }
        if error is ChannelError, case .connectTimeout = error as! ChannelError {
            return problem(.unreachable, "did not answer within \(connectTimeout)")
        }
        if let connection = error as? NIOConnectionError {
            if connection.connectionErrors.contains(where: { "\($0.error)".contains("refused") }) {
                return problem(.refused, "connection refused: nothing listens there")
            }
            if connection.dnsAAAAError != nil || connection.dnsAError != nil, connection.connectionErrors.isEmpty {
                return problem(.unreachable, "the host name does not resolve")
            }
            return problem(.unreachable, "\(connection.connectionErrors.map { "\($0.error)" }.joined(separator: "; "))")
        }
        return problem(.other, text)
    }

    private func problem(_ kind: PostgresConnectionProblem.Kind, _ detail: String) -> PostgresConnectionProblem {
        PostgresConnectionProblem(
            kind: kind, message: "cannot connect to the PostgreSQL ledger at \(host):\(port) as \(user): \(detail)")
    }
}
