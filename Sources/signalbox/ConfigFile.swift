import Alerts
import ArgumentParser
import Foundation
import Gateway
import Node
import SignalboxCore

/// The configuration file (JSON). Every key is optional; an unknown one is an error naming the
/// closest known key (`ConfigSchema`, which Docs/configuration.md's table is printed from).
struct ConfigFile: Decodable {
    struct Server: Decodable {
        var host: String?
        var port: Int?
        var maxBodyBytes: Int?
        var keepAliveSeconds: Int?
        var adminTimeoutSeconds: Int?
        var headerTimeoutSeconds: Int?
        var bodyTimeoutSeconds: Int?
        var idleTimeoutSeconds: Int?
        var maxConnectionsPerAddress: Int?
        var maxConnections: Int?
        var metricsRequireAdminKey: Bool?
        var bodyMemoryBudgetBytes: Int?
        var connectionLimitExempt: [String]?
        enum CodingKeys: String, CodingKey {
            case host, port
            case maxBodyBytes = "max_body_bytes"
            case keepAliveSeconds = "keep_alive_seconds"
            case adminTimeoutSeconds = "admin_timeout_seconds"
            case headerTimeoutSeconds = "header_timeout_seconds"
            case bodyTimeoutSeconds = "body_timeout_seconds"
            case idleTimeoutSeconds = "idle_timeout_seconds"
            case maxConnectionsPerAddress = "max_connections_per_address"
            case maxConnections = "max_connections"
            case metricsRequireAdminKey = "metrics_require_admin_key"
            case bodyMemoryBudgetBytes = "body_memory_budget_bytes"
            case connectionLimitExempt = "connection_limit_exempt"
        }
    }

    struct Database: Decodable {
        var url: String?
        var caFile: String?
        var poolSize: Int?
        var connectTimeoutSeconds: Int?
        var statementTimeoutSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case url
            case caFile = "ca_file"
            case poolSize = "pool_size"
            case connectTimeoutSeconds = "connect_timeout_seconds"
            case statementTimeoutSeconds = "statement_timeout_seconds"
        }
    }

    struct Timeouts: Decodable {
        var connectSeconds: Int?
        var firstTokenSeconds: Int?
        var stallSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case connectSeconds = "connect_seconds"
            case firstTokenSeconds = "first_token_seconds"
            case stallSeconds = "stall_seconds"
        }
    }

    struct Drain: Decodable {
        var delaySeconds: Int?
        var timeoutSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case delaySeconds = "delay_seconds"
            case timeoutSeconds = "timeout_seconds"
        }
    }

    struct ConsoleSection: Decodable {
        struct OIDC: Decodable {
            var issuer: String?
            var clientID: String?
            var clientSecretEnv: String?
            var redirectURL: String?
            var scopes: [String]?
            var groupsClaim: String?
            var displayName: String?
            enum CodingKeys: String, CodingKey {
                case issuer, scopes
                case clientID = "client_id"
                case clientSecretEnv = "client_secret_env"
                case redirectURL = "redirect_url"
                case groupsClaim = "groups_claim"
                case displayName = "display_name"
            }
        }
        var enabled: Bool?
        var sessionIdleSeconds: Int?
        var sessionLifetimeSeconds: Int?
        var secureCookies: Bool?
        var loginAttempts: Int?
        var loginRefillSeconds: Int?
        var oidc: OIDC?
        enum CodingKeys: String, CodingKey {
            case enabled, oidc
            case sessionIdleSeconds = "session_idle_seconds"
            case sessionLifetimeSeconds = "session_lifetime_seconds"
            case secureCookies = "secure_cookies"
            case loginAttempts = "login_attempts"
            case loginRefillSeconds = "login_refill_seconds"
        }
    }

    struct Telemetry: Decodable {
        struct Traces: Decodable {
            var endpoint: String?
            var sampler: String?
            var samplerRatio: Double?
            var serviceName: String?
            enum CodingKeys: String, CodingKey {
                case endpoint, sampler
                case samplerRatio = "sampler_ratio"
                case serviceName = "service_name"
            }
        }
        var traces: Traces?
    }

    struct AlertsSection: Decodable {
        struct Webhook: Decodable {
            var url: String?
            var secretEnv: String?
            var secretFile: String?
            var format: String?
            var events: [String]?
            enum CodingKeys: String, CodingKey {
                case url, format, events
                case secretEnv = "secret_env"
                case secretFile = "secret_file"
            }
        }
        var webhooks: [Webhook]?
        var balanceBelowUSD: String?
        var spoolAgeSeconds: Int?
        var queueSize: Int?
        var maxAttempts: Int?
        var checkIntervalSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case webhooks
            case balanceBelowUSD = "balance_below_usd"
            case spoolAgeSeconds = "spool_age_seconds"
            case queueSize = "queue_size"
            case maxAttempts = "max_attempts"
            case checkIntervalSeconds = "check_interval_seconds"
        }
    }

    var server: Server?
    var database: Database?
    var telemetry: Telemetry?
    var alerts: AlertsSection?
    var console: ConsoleSection?
    var timeouts: Timeouts?
    var drain: Drain?
    var useSimulator: Bool?
    var providers: [ProviderInfo]?
    var models: [CatalogModel]?

    enum CodingKeys: String, CodingKey {
        case server, database, timeouts, drain, providers, models, console, telemetry, alerts
        case useSimulator = "use_simulator"
    }

    init() {}

    /// Reads and checks the file: JSON, no unknown keys at any depth, values of the right types.
    static func load(path: String) throws -> ConfigFile {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigFileError("Cannot read configuration file \(path): \(error.localizedDescription)")
        }
        let raw: Any
        do { raw = try JSONSerialization.jsonObject(with: data) } catch {
            throw ConfigFileError("Configuration file \(path) is not valid JSON: \(error.localizedDescription)")
        }
        let unknown = ConfigSchema.unknownKeys(in: raw)
        guard unknown.isEmpty else {
            throw ConfigFileError("Configuration file \(path): " + unknown.joined(separator: "; "))
        }
        do {
            return try JSONDecoder().decode(ConfigFile.self, from: data)
        } catch let DecodingError.typeMismatch(type, context), let DecodingError.valueNotFound(type, context) {
            throw ConfigFileError("Configuration file \(path): \(place(context)) must be \(type)")
        } catch let DecodingError.keyNotFound(key, context) {
            throw ConfigFileError("Configuration file \(path): \(place(context, key.stringValue)) is required")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigFileError("Configuration file \(path): \(place(context)): \(context.debugDescription)")
        } catch {
            throw ConfigFileError("Configuration file \(path): \(error)")
        }
    }

    /// `models[0].endpoints[1].pricing` from a decoding error's path.
    private static func place(_ context: DecodingError.Context, _ last: String? = nil) -> String {
        var text = ""
        for key in context.codingPath + (last.map { [AnyKey($0)] } ?? []) {
            if let index = key.intValue { text += "[\(index)]" } else { text += text.isEmpty ? key.stringValue : ".\(key.stringValue)" }
        }
        return text.isEmpty ? "the file" : text
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ string: String) { stringValue = string }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Where the node sends traces (`telemetry.traces` and the `OTEL_*` variables); nil for none.
    func traceSettings(environment: [String: String]) throws -> TraceSettings? {
        let traces = telemetry?.traces.map {
            TraceSettings(
                endpoint: $0.endpoint, sampler: $0.sampler, samplerRatio: $0.samplerRatio, serviceName: $0.serviceName ?? "signalbox")
        }
        do {
            return try TraceSettings.resolve(file: traces, environment: environment)
        } catch let error as TraceSettingsError {
            throw ConfigFileError(error.description)
        }
    }

    /// The alert settings (`alerts`), with the webhooks' secrets; nil when no webhook is configured.
    func alertSettings(environment: [String: String]) throws -> AlertSettings? {
        guard let alerts else { return nil }
        do {
            // Checked even without a webhook, so a mistake shows before the first one is added.
            let settings = try AlertSettings.make(
                webhooks: (alerts.webhooks ?? []).map { ($0.url, $0.secretEnv, $0.secretFile, $0.format, $0.events) },
                balanceBelow: alerts.balanceBelowUSD, spoolAgeSeconds: alerts.spoolAgeSeconds, queueSize: alerts.queueSize,
                maxAttempts: alerts.maxAttempts, checkIntervalSeconds: alerts.checkIntervalSeconds, environment: environment,
                readFile: { try? String(contentsOfFile: $0, encoding: .utf8) })
            return settings.webhooks.isEmpty ? nil : settings
        } catch let error as AlertSettingsError {
            throw ConfigFileError(error.description)
        }
    }

    func apply(to configuration: inout GatewayConfiguration) {
        if let host = server?.host { configuration.host = host }
        if let port = server?.port { configuration.port = port }
        if let bytes = server?.maxBodyBytes { configuration.maxBodyBytes = bytes }
        if let seconds = server?.keepAliveSeconds { configuration.keepAliveInterval = .seconds(seconds) }
        if let seconds = timeouts?.connectSeconds { configuration.timeouts.connect = .seconds(seconds) }
        if let seconds = timeouts?.firstTokenSeconds { configuration.timeouts.firstToken = .seconds(seconds) }
        if let seconds = timeouts?.stallSeconds { configuration.timeouts.stall = .seconds(seconds) }
    }
}

/// A configuration file that can't be used, and why (printed without the usage text that an
/// argument error gets).
struct ConfigFileError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
