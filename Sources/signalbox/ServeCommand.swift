import ArgumentParser
import AsyncHTTPClient
import Foundation
import Gateway
import Hummingbird
import Ledger
import Logging
import PostgresNIO
import Providers
import Gossip
import NIOSSL
import ServiceLifecycle
import SignalboxCore
import SimProvider

/// `signalbox serve`: one router node. With no options it runs the embedded default: a SQLite
/// ledger under `./.signalbox/`, the shipped catalog and the simulated provider in-process.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a router node.")

    @Option(help: "This node's name in the cluster and in its ledger leases (default: HOST-PORT).") var nodeId: String?
    @Option(help: "The region this node serves (default: local).") var region: String?
    @Option(help: "Gossip with other nodes: UDP HOST:PORT to listen on (turns cluster mode on).") var gossipBind: String?
    @Option(help: "HOST:PORT other nodes reach this node's gossip at (default: --gossip-bind).") var gossipAdvertise: String?
    @Option(help: "Comma-separated gossip HOST:PORT of nodes to join through.") var seeds: String?
    @Option(help: "Cluster key file (signalbox cluster keygen); required with --gossip-bind.") var clusterKeyFile: String?
    @Option(help: "Largest gossip datagram in bytes, header and seal included (512–65000, default 1400; the same on every node).")
    var gossipMaxDatagram: Int?
    @Option(help: "This node's API base URL for other nodes (default: http(s)://HOST:PORT, with the gossip host for 0.0.0.0).")
    var advertiseUrl: String?
    @Option(help: "Serve HTTPS with this PEM certificate (chain); needs --tls-key.") var tlsCert: String?
    @Option(help: "The PEM private key of --tls-cert.") var tlsKey: String?
    @Option(help: "PEM CA certificate(s) that sign the other nodes' certificates, for forwarding to them over HTTPS.")
    var peerCaFile: String?
    @Option(help: "Address to listen on.") var host: String?
    @Option(help: "Port to listen on.") var port: Int?
    @Option(help: "Directory for the embedded ledger and the demo/admin key files.") var dataDir: String = ".signalbox"
    @Option(
        help: "PostgreSQL ledger (postgres://user:password@host:port/db) instead of the embedded SQLite one; also SIGNALBOX_DATABASE_URL.")
    var databaseURL: String?
    @Option(help: "Configuration file (JSON): server settings, providers, catalog additions.") var config: String?
    @Option(help: "Port of the in-process simulated provider.") var simPort: Int = 8091
    @Option(help: "Use an already running simulator at this base URL instead of starting one.") var simUrl: String?
    @Flag(help: "Send requests to the providers' real base URLs, with keys from their environment variables.")
    var realProviders = false
    @Option(help: "Credit (USD) the demo account starts with.") var demoCredits: String = "10"
    @Option(help: "Upstream connect timeout, seconds (default 10).") var connectTimeout: Int?
    @Option(help: "Upstream time-to-first-token timeout, seconds (default 60).") var firstTokenTimeout: Int?
    @Option(help: "Upstream stall timeout between chunks, seconds (default 30).") var stallTimeout: Int?
    @Option(help: "Largest request body in bytes (default 32 MiB).") var maxBodyBytes: Int?
    @Option(help: "Default first pick: price-weighted (random, weighted by 1/price²) or catalog-order.")
    var loadBalancing: String?
    @Option(help: "Seconds a hold or lease outlives its node before the ledger voids it (default 900).") var holdTtl: Int?
    @Option(help: "Smallest slice (USD) of an account's credit this node leases at a time (default 1).") var leaseSlice: String?
    @Option(help: "Settlement spool: where charges wait while the ledger is unreachable (default DATA-DIR/settlements.spool).")
    var spool: String?
    @Option(help: "Seconds a settlement may wait in the spool before the node refuses paid requests (default 3600).")
    var maxSpoolAge: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"

    func run() async throws {
        var logger = Logger(label: "signalbox")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

        let file = try config.map { try ConfigFile.load(path: $0) } ?? ConfigFile()
        var configuration = GatewayConfiguration()
        file.apply(to: &configuration)
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        if let seconds = connectTimeout { configuration.timeouts.connect = .seconds(seconds) }
        if let seconds = firstTokenTimeout { configuration.timeouts.firstToken = .seconds(seconds) }
        if let seconds = stallTimeout { configuration.timeouts.stall = .seconds(seconds) }
        if let maxBodyBytes { configuration.maxBodyBytes = maxBodyBytes }
        configuration.serverTLS = try serverTLS()
        if let holdTtl {
            guard holdTtl >= 2 else { throw ValidationError("--hold-ttl must be at least 2 seconds") }
            configuration.holdTTL = TimeInterval(holdTtl)
        }
        configuration.nodeID = nodeId ?? "\(ProcessInfo.processInfo.hostName)-\(configuration.port)"
        if let region { configuration.region = region }
        if let loadBalancing {
            guard let mode = RoutingPlanner.LoadBalancing(rawValue: loadBalancing) else {
                throw ValidationError("--load-balancing must be price-weighted or catalog-order")
            }
            configuration.loadBalancing = mode
        }
        guard let demoAmount = Money(decimal: demoCredits), demoAmount >= .zero else {
            throw ValidationError("--demo-credits must be a non-negative decimal amount")
        }

        var catalog = try Catalog.shipped()
        catalog.merge(providers: file.providers ?? [], models: file.models ?? [])
        try catalog.validate()

        let simulate = !realProviders && !(file.useSimulator == false)
        var services: [any Service] = []
        var providerKeys: [String: String] = [:]
        var simulatorURL: String?
        if simulate {
            if let simUrl {
                simulatorURL = simUrl
            } else {
                let simulator = Simulator()
                services.append(
                    Application(
                        router: simulator.buildRouter(),
                        configuration: .init(address: .hostname("127.0.0.1", port: simPort), serverName: "signalbox-sim"),
                        logger: Logger(label: "signalbox.sim")))
                simulatorURL = "http://127.0.0.1:\(simPort)"
            }
            catalog.pointAllProviders(at: simulatorURL!)
            for slug in catalog.providers.keys { providerKeys[slug] = "sk-simulated" }
        } else {
            let environment = ProcessInfo.processInfo.environment
            for (slug, provider) in catalog.providers {
                if let key = environment[provider.apiKeyEnv], !key.isEmpty { providerKeys[slug] = key }
            }
        }

        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let databaseURL = self.databaseURL ?? ProcessInfo.processInfo.environment["SIGNALBOX_DATABASE_URL"]
        if let databaseURL {
            // The cluster ledger: the pool runs beside the service group for the node's whole life.
            try await PostgresLedgerStore.withStore(
                url: databaseURL, statementTimeout: PostgresLedgerStore.statementTimeout, logger: logger
            ) { ledger in
                try await serve(
                    ledger: ledger, configuration: configuration, catalog: catalog, services: services,
                    providerKeys: providerKeys, simulatorURL: simulatorURL, demoAmount: demoAmount, logger: logger)
            }
        } else {
            let ledger = try await SQLiteLedgerStore.open(path: dataDir + "/ledger.sqlite", logger: logger)
            do {
                try await serve(
                    ledger: ledger, configuration: configuration, catalog: catalog, services: services,
                    providerKeys: providerKeys, simulatorURL: simulatorURL, demoAmount: demoAmount, logger: logger)
            } catch {
                try? await ledger.close()
                throw error
            }
            try await ledger.close()
        }
    }

    func maxSpoolAgeSeconds() throws -> TimeInterval {
        guard let maxSpoolAge else { return 3600 }
        guard maxSpoolAge >= 1 else { throw ValidationError("--max-spool-age must be at least 1 second") }
        return TimeInterval(maxSpoolAge)
    }

    func serve(
        ledger: any LedgerStore, configuration: GatewayConfiguration, catalog: Catalog, services: [any Service],
        providerKeys: [String: String], simulatorURL: String?, demoAmount: Money, logger: Logger
    ) async throws {
        var services = services
        let keys = try await DemoSetup.run(ledger: ledger, dataDir: dataDir, demoCredits: demoAmount)
        let httpClient = AsyncHTTPClientTransport.makeClient(
            connectTimeout: .seconds(Int64(configuration.timeouts.connect.components.seconds)))
        var policy = LeasePolicy(ttl: configuration.holdTTL, idleRelease: min(10, configuration.holdTTL / 4))
        if let leaseSlice {
            guard let slice = Money(decimal: leaseSlice), slice > .zero else {
                throw ValidationError("--lease-slice must be a positive amount")
            }
            policy.slice = slice
        }
        let spoolPath = spool ?? dataDir + "/settlements.spool"
        let metrics = GatewayMetrics()
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: spoolPath), rejects: try SettlementSpool(path: spoolPath + ".rejected"),
            maxSpoolAge: try maxSpoolAgeSeconds(), logger: logger, onCommit: { metrics.settlementBatch(size: $0) })
        let credit = CreditLeases(store: ledger, committer: committer, nodeID: configuration.nodeID, policy: policy, logger: logger)
        let health = HealthTracker()
        let cluster = try makeCluster(configuration: configuration, health: health, logger: logger)
        let forwardingClient = try makeForwardingClient()
        let gateway = RouterAPI(
            GatewayDependencies(
                configuration: configuration, catalog: catalog, ledger: ledger,
                transport: AsyncHTTPClientTransport(client: httpClient), providerKeys: providerKeys, logger: logger,
                metrics: metrics, health: health, credit: credit, cluster: cluster,
                forwardingTransport: forwardingClient.map { AsyncHTTPClientTransport(client: $0) }),
            readiness: Readiness(ready: false))
        let host = configuration.host
        let modelCount = catalog.models.count
        let upstreamDescription = simulatorURL.map { "simulated provider at \($0)" } ?? "real providers"
        let ledgerDescription = ledger is PostgresLedgerStore ? "PostgreSQL" : "SQLite (\(dataDir)/ledger.sqlite)"
        let scheme = configuration.serverTLS == nil ? "http" : "https"
        let app = try gateway.buildApplication { port in
            let banner = """

                Signalbox is serving at \(scheme)://\(host):\(port)/api/v1
                  models:     \(modelCount) (\(upstreamDescription))
                  ledger:     \(ledgerDescription)
                  demo key:   \(keys.demo)     (also in \(dataDir)/demo-key; $\(demoAmount.decimalString) credit at start)
                  admin key:  \(keys.admin)    (also in \(dataDir)/admin-key)

                Try:
                  curl http://\(host):\(port)/api/v1/chat/completions \\
                    -H "Authorization: Bearer \(keys.demo)" -H "Content-Type: application/json" \\
                    -d '{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'

                """
            // Written straight to the file descriptor: print() would sit in a buffer when stdout is a pipe.
            FileHandle.standardOutput.write(Data((banner + "\n").utf8))
        }
        // Before the server: it stops after it, once in-flight requests have settled, and gives
        // the node's leases back.
        let expiryInterval = Duration.seconds(min(30, max(1, configuration.holdTTL / 2)))
        services.append(LedgerUpkeepService(ledger: ledger, credit: credit, expiryInterval: expiryInterval, logger: logger))
        // Before the server too: the node announces it leaves only after its requests finished.
        if let cluster { services.append(cluster) }
        services.append(app)
        // Last in the group, so the first to hear of a shutdown: readiness turns off before the
        // server stops accepting connections.
        services.append(DrainOnShutdownService(readiness: gateway.readiness, onDrain: { await cluster?.startDraining() }))
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            try? await httpClient.shutdown()
            try? await forwardingClient?.shutdown()
            throw error
        }
        try await httpClient.shutdown()
        try await forwardingClient?.shutdown()
    }

    /// The HTTPS listener's configuration, when --tls-cert and --tls-key are given.
    func serverTLS() throws -> TLSConfiguration? {
        switch (tlsCert, tlsKey) {
        case (nil, nil): return nil
        case (.some, nil), (nil, .some): throw ValidationError("--tls-cert and --tls-key go together")
        case (let cert?, let key?):
            let chain: [NIOSSLCertificate]
            let privateKey: NIOSSLPrivateKey
            do { chain = try NIOSSLCertificate.fromPEMFile(cert) } catch {
                throw ValidationError("--tls-cert \(cert): not a readable PEM certificate (\(error))")
            }
            do { privateKey = try NIOSSLPrivateKey(file: key, format: .pem) } catch {
                throw ValidationError("--tls-key \(key): not a readable PEM private key (\(error))")
            }
            guard !chain.isEmpty else { throw ValidationError("--tls-cert \(cert) holds no certificate") }
            return TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(privateKey))
        }
    }

    /// A client that trusts the peers' CA, for forwarding to nodes that serve HTTPS.
    func makeForwardingClient() throws -> HTTPClient? {
        guard let peerCaFile else { return nil }
        let roots: [NIOSSLCertificate]
        do { roots = try NIOSSLCertificate.fromPEMFile(peerCaFile) } catch {
            throw ValidationError("--peer-ca-file \(peerCaFile): not a readable PEM certificate (\(error))")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(roots)
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.timeout.connect = .seconds(5)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }
}

extension Serve {
    /// The node's gossip membership when `--gossip-bind` is given.
    func makeCluster(configuration: GatewayConfiguration, health: HealthTracker, logger: Logger) throws -> ClusterNode? {
        guard let gossipBind else {
            guard seeds == nil, clusterKeyFile == nil else { throw ValidationError("--seeds and --cluster-key-file need --gossip-bind") }
            return nil
        }
        guard let bind = MemberAddress(gossipBind) else { throw ValidationError("--gossip-bind must be HOST:PORT") }
        guard let advertised = MemberAddress(gossipAdvertise ?? gossipBind), !["0.0.0.0", "::"].contains(advertised.host) else {
            throw ValidationError("give --gossip-advertise HOST:PORT when --gossip-bind listens on every address")
        }
        guard let clusterKeyFile else {
            throw ValidationError("--gossip-bind needs --cluster-key-file (signalbox cluster keygen --out FILE)")
        }
        let keyring = try ClusterKeyring(contentsOfFile: clusterKeyFile)
        var settings = SwimSettings()
        if let gossipMaxDatagram {
            guard (512...65_000).contains(gossipMaxDatagram) else {
                throw ValidationError("--gossip-max-datagram must be between 512 and 65000 bytes; got \(gossipMaxDatagram)")
            }
            settings.maxDatagramBytes = gossipMaxDatagram
        }
        let seedList = try (seeds ?? "").split(separator: ",").map { text -> MemberAddress in
            guard let address = MemberAddress(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--seeds must be HOST:PORT,HOST:PORT,…; got \(text)")
            }
            return address
        }
        // The boot time as the first incarnation: a restarted node outranks its old self.
        let scheme = configuration.serverTLS == nil ? "http" : "https"
        let apiURL =
            advertiseUrl
            ?? "\(scheme)://\(["0.0.0.0", "::"].contains(configuration.host) ? advertised.host : configuration.host):\(configuration.port)"
        let myself = Member(
            id: configuration.nodeID, address: advertised, region: configuration.region,
            incarnation: UInt64(Date().timeIntervalSince1970 * 1000), apiURL: apiURL)
        return ClusterNode(
            myself: myself, bind: bind, seeds: seedList, keyring: keyring, keyringPath: clusterKeyFile,
            settings: settings, health: health, tablesPath: dataDir + "/routing-tables.json", logger: logger)
    }
}

enum DemoSetup {
    static let demoAccount = "demo"
    static let adminAccount = "operator"

    /// Creates the demo and operator accounts and keys if they do not exist; returns the keys.
    static func run(ledger: any LedgerStore, dataDir: String, demoCredits: Money) async throws -> (demo: String, admin: String) {
        let environment = ProcessInfo.processInfo.environment
        let fresh = try await ledger.account(id: demoAccount) == nil
        try await ledger.createAccount(id: demoAccount, name: "Demo")
        try await ledger.createAccount(id: adminAccount, name: "Operator")
        if fresh && demoCredits > .zero {
            try await ledger.post([
                TransferRequest(
                    idempotencyKey: "demo-grant", debit: Billing.SystemAccount.grants, credit: demoAccount,
                    amount: demoCredits, kind: .grant, memo: "Demo credit")
            ])
        }
        let demo = try await key(
            named: "demo", file: dataDir + "/demo-key", override: environment["SIGNALBOX_DEMO_KEY"],
            account: demoAccount, isAdmin: false, ledger: ledger)
        let admin = try await key(
            named: "admin", file: dataDir + "/admin-key", override: environment["SIGNALBOX_ADMIN_KEY"],
            account: adminAccount, isAdmin: true, ledger: ledger)
        return (demo, admin)
    }

    private static func key(
        named name: String, file: String, override: String?, account: String, isAdmin: Bool,
        ledger: any LedgerStore
    ) async throws -> String {
        let key: String
        if let override, override.hasPrefix("sk-") {
            key = override
        } else if let saved = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            saved.hasPrefix("sk-")
        {
            key = saved
        } else {
            key = APIKeyFormat.generate()
        }
        try key.write(toFile: file, atomically: true, encoding: .utf8)
        let hash = APIKeyFormat.hash(key)
        if try await ledger.key(hash: hash) == nil {
            try await ledger.insertKey(
                KeyRecord(
                    id: "key-" + String(hash.prefix(16)), accountID: account, hash: hash, label: APIKeyFormat.label(key),
                    name: name, isAdmin: isAdmin))
        }
        return key
    }
}

/// The configuration file (JSON). Every key is optional; see Docs/configuration.md.
struct ConfigFile: Decodable {
    struct Server: Decodable {
        var host: String?
        var port: Int?
        var maxBodyBytes: Int?
        var keepAliveSeconds: Int?
        enum CodingKeys: String, CodingKey {
            case host, port
            case maxBodyBytes = "max_body_bytes"
            case keepAliveSeconds = "keep_alive_seconds"
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

    var server: Server?
    var timeouts: Timeouts?
    var useSimulator: Bool?
    var providers: [ProviderInfo]?
    var models: [CatalogModel]?

    enum CodingKeys: String, CodingKey {
        case server, timeouts, providers, models
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
        if let seconds = timeouts?.connectSeconds { configuration.timeouts.connect = .seconds(seconds) }
        if let seconds = timeouts?.firstTokenSeconds { configuration.timeouts.firstToken = .seconds(seconds) }
        if let seconds = timeouts?.stallSeconds { configuration.timeouts.stall = .seconds(seconds) }
    }
}
