import ArgumentParser
import Foundation
import Gateway
import SignalboxCore

/// The configuration file (JSON). Every key is optional; see Docs/configuration.md.
struct ConfigFile: Decodable {
    struct Server: Decodable {
        var host: String?
        var port: Int?
        var maxBodyBytes: Int?
        var keepAliveSeconds: Int?
        var adminTimeoutSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case host, port
            case maxBodyBytes = "max_body_bytes"
            case keepAliveSeconds = "keep_alive_seconds"
            case adminTimeoutSeconds = "admin_timeout_seconds"
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

    var server: Server?
    var database: Database?
    var timeouts: Timeouts?
    var useSimulator: Bool?
    var providers: [ProviderInfo]?
    var models: [CatalogModel]?

    enum CodingKeys: String, CodingKey {
        case server, database, timeouts, providers, models
        case useSimulator = "use_simulator"
    }

    init() {}

    static func load(path: String) throws -> ConfigFile {
        do {
            return try JSONDecoder().decode(ConfigFile.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ValidationError("Cannot read configuration file \(path): \(error)")
        }
    }

    func apply(to configuration: inout GatewayConfiguration) {
        if let host = server?.host { configuration.host = host }
        if let port = server?.port { configuration.port = port }
        if let bytes = server?.maxBodyBytes { configuration.maxBodyBytes = bytes }
        if let seconds = server?.keepAliveSeconds { configuration.keepAliveInterval = .seconds(seconds) }
        if let seconds = server?.adminTimeoutSeconds { configuration.adminTimeout = .seconds(seconds) }
        if let seconds = timeouts?.connectSeconds { configuration.timeouts.connect = .seconds(seconds) }
        if let seconds = timeouts?.firstTokenSeconds { configuration.timeouts.firstToken = .seconds(seconds) }
        if let seconds = timeouts?.stallSeconds { configuration.timeouts.stall = .seconds(seconds) }
    }
}
