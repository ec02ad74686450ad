import ArgumentParser
import Foundation
import Gateway
import Gossip
import Hummingbird
import Logging
import NIOSSL
import Ledger
import Node
import ServiceLifecycle
import SignalboxCore
import SimProvider
import UnixSignals

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
    @OptionGroup(title: "PostgreSQL ledger (instead of the embedded SQLite one)") var database: DatabaseOptions
    @Option(help: "Configuration file (JSON): server settings, providers, catalog additions.") var config: String?
    @Option(help: "Port of the in-process simulated provider.") var simPort: Int = 8091
    @Option(help: "Use an already running simulator at this base URL instead of starting one.") var simUrl: String?
    @Flag(help: "Send requests to the providers' real base URLs, with keys from their environment variables.")
    var realProviders = false
    @Option(
        help:
            "Credit (USD) the demo account starts with (default 10). A cluster node (--database-url) makes the demo account only when this is given."
    )
    var demoCredits: String?
    @Option(help: "File holding the operator admin key (instead of SIGNALBOX_ADMIN_KEY); required in cluster mode unless that is set.")
    var adminKeyFile: String?
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
    @Option(help: "Seconds /readyz answers 503 while the listener still accepts, after SIGTERM (default 10; SIGINT skips it).")
    var drainDelay: Int?
    @Option(help: "Seconds in-flight requests get to finish once the listener closed, before they are cut (default 60).")
    var drainTimeout: Int?
    @Option(help: "Seconds a new connection has to send its first complete request head (default 30).") var headerTimeout: Int?
    @Option(help: "Seconds a request body has to arrive whole after its head (default 60).") var bodyTimeout: Int?
    @Option(help: "Seconds a kept-alive connection may wait for its next request (default 30).") var idleTimeout: Int?
    @Option(help: "Open connections one source address may hold; more are closed at once (default 64).")
    var maxConnectionsPerAddress: Int?
    @Option(help: "Open client connections in all; more are closed at once (default: (descriptor limit − 128) / 2).")
    var maxConnections: Int?
    @Option(help: "Comma-separated addresses or CIDRs (your load balancers) not held to --max-connections-per-address.")
    var connectionLimitExempt: String?
    @Flag(help: "Serve /metrics only with the operator admin key.") var metricsRequireAdminKey = false
    @Flag(inversion: .prefixedNo, help: "One log line per model request (logger signalbox.access).") var accessLog = true
    @Option(help: "Bytes of memory large request bodies (over 1 MiB) may take at once, counted at 6× their size (default 268435456).")
    var bodyMemoryBudget: Int?
    @Option(help: "Seconds the admin and account routes may wait for the ledger before answering 503 (default 10).")
    var adminTimeout: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel: String = "info"
    @Option(help: "Log format: text, or json (one JSON object per line on stdout, from the first line on).")
    var logFormat: LogFormat = .text

    func run() async throws {
        // Trapped before anything else: until a handler is installed, SIGHUP's default action
        // would end the process (a `systemctl reload` right after start).
        let hangupSignals = await UnixSignalsSequence(trapping: .sighup)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        guard logFormat == .json else { return try await serve(level: level, hangups: hangupSignals) }
        LoggingSystem.bootstrap { label in
            var handler = JSONLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        do {
            try await serve(level: level, hangups: hangupSignals)
        } catch {
            // A start-up error is a log line too, not plain text on stderr.
            var logger = Logger(label: "signalbox")
            logger.logLevel = level
            logger.critical("\(error)")
            throw ExitCode.failure
        }
    }

    func serve(level: Logger.Level, hangups hangupSignals: UnixSignalsSequence) async throws {
        var logger = Logger(label: "signalbox")
        logger.logLevel = level
        // Everything the node writes (ledger, spool, keys, routing tables) is for its user only.
        umask(0o077)
        let file = try config.map { try ConfigFile.load(path: $0) } ?? ConfigFile()
        for warning in ConfigSchema.unknownEnvironment(ProcessInfo.processInfo.environment) { logger.warning("\(warning)") }
        let upstreams = try upstreamChoice(file)
        var configuration = try nodeConfiguration(file, upstreams: upstreams)
        let keyringReload = KeyringReloadRequests()
        configuration.cluster?.keyringReload = keyringReload
        if let tightened = try SecretFile.privateDirectory(dataDir) { logger.notice("data directory: \(tightened)") }

        var services: [any Service] = []
        if case .inProcessSimulator(let port) = upstreams {
            // It stops after the node (it is first in the group); a slow answer it still owes
            // a request the node cut must not hold the process for long.
            let simulator = Application(
                router: Simulator().buildRouter(),
                configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "signalbox-sim"),
                logger: Logger(label: "signalbox.sim"))
            services.append(BoundedShutdownService(simulator, timeout: .seconds(1), logger: logger))
        }
        let banner = Banner(
            configuration: configuration, upstreams: upstreams.description,
            ledger: configuration.postgres.map { "PostgreSQL (\($0))" } ?? "SQLite (\(dataDir)/ledger.sqlite)",
            // Only to a person at a terminal: a container's or service's stdout is a log.
            showsMintedKeys: configuration.postgres == nil && isatty(STDOUT_FILENO) == 1 && logFormat == .text,
            format: logFormat)
        services.append(SignalboxNode(configuration, logger: logger) { serving in banner.print(serving) })
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // Ctrl-C at a terminal stops the node without the drain delay balancers need; SIGTERM waits it out.
        let interrupts = Task { [gate = configuration.drainGate] in
            for await _ in await UnixSignalsSequence(trapping: .sigint) { gate.skip() }
        }
        defer { interrupts.cancel() }
        // SIGHUP (systemd's `ExecReload`) re-reads the cluster key file now rather than within 10 s.
        let hangups = Task { [logger, clustered = configuration.cluster != nil] in
            for await _ in hangupSignals {
                guard clustered else {
                    logger.notice("SIGHUP: nothing to reload (no --cluster-key-file)")
                    continue
                }
                logger.notice("SIGHUP: re-reading the cluster key file")
                keyringReload.request()
            }
        }
        defer { hangups.cancel() }
        try await group.run()
    }

    /// Where upstream requests go.
    enum Upstreams: CustomStringConvertible {
        /// The simulator this process starts on 127.0.0.1 at this port.
        case inProcessSimulator(port: Int)
        /// A simulator already running at this base URL.
        case simulator(url: String)
        /// The providers' real base URLs, with keys from their environment variables.
        case realProviders

        var simulatorURL: String? {
            switch self {
            case .inProcessSimulator(let port): "http://127.0.0.1:\(port)"
            case .simulator(let url): url
            case .realProviders: nil
            }
        }

        var description: String { simulatorURL.map { "simulated provider at \($0)" } ?? "real providers" }
    }

    func upstreamChoice(_ file: ConfigFile) throws -> Upstreams {
        if realProviders || file.useSimulator == false { return .realProviders }
        return simUrl.map { .simulator(url: $0) } ?? .inProcessSimulator(port: simPort)
    }

    /// The PostgreSQL ledger's settings, with a serving node's statement timeout (the settlement
    /// deadline); nil runs the embedded SQLite ledger.
    func ledgerSettings(_ file: ConfigFile) throws -> PostgresSettings? {
        try database.settings(file: file.database, statementTimeout: .milliseconds(Int64(PostgresLedgerStore.statementTimeout * 1000)))
    }

    /// The node's configuration: defaults, then the configuration file, then the flags.
    func nodeConfiguration(_ file: ConfigFile, upstreams: Upstreams) throws -> NodeConfiguration {
        var gateway = GatewayConfiguration()
        file.apply(to: &gateway)
        if let host { gateway.host = host }
        if let port { gateway.port = port }
        if let seconds = connectTimeout { gateway.timeouts.connect = .seconds(seconds) }
        if let seconds = firstTokenTimeout { gateway.timeouts.firstToken = .seconds(seconds) }
        if let seconds = stallTimeout { gateway.timeouts.stall = .seconds(seconds) }
        if let maxBodyBytes { gateway.maxBodyBytes = maxBodyBytes }
        let server = file.server
        let limitsGiven: [(String, Int?)] = [
            ("--header-timeout", headerTimeout ?? server?.headerTimeoutSeconds),
            ("--body-timeout", bodyTimeout ?? server?.bodyTimeoutSeconds),
            ("--idle-timeout", idleTimeout ?? server?.idleTimeoutSeconds),
            ("--max-connections-per-address", maxConnectionsPerAddress ?? server?.maxConnectionsPerAddress),
            ("--max-connections", maxConnections ?? server?.maxConnections),
        ]
        for case (let flag, let value?) in limitsGiven where value < 1 {
            throw ValidationError("\(flag) must be at least 1; got \(value)")
        }
        if let seconds = limitsGiven[0].1 { gateway.connections.headerTimeout = .seconds(seconds) }
        if let seconds = limitsGiven[1].1 { gateway.connections.bodyTimeout = .seconds(seconds) }
        if let seconds = limitsGiven[2].1 { gateway.connections.idleTimeout = .seconds(seconds) }
        if let count = limitsGiven[3].1 { gateway.connections.perAddress = count }
        if let count = limitsGiven[4].1 { gateway.connections.total = count }
        let exempt =
            connectionLimitExempt.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            ?? server?.connectionLimitExempt ?? []
        gateway.connections.exemptAddresses = try exempt.map { text in
            guard let range = AddressRange(text) else {
                throw ValidationError("--connection-limit-exempt: \(text) is not an address or CIDR (e.g. 10.0.0.0/8, fd00::/8)")
            }
            return range
        }
        gateway.metricsRequireAdminKey = metricsRequireAdminKey || server?.metricsRequireAdminKey == true
        // Access lines are `info`: a higher --log-level silences them too.
        gateway.accessLog = accessLog && (Logger.Level(rawValue: logLevel) ?? .info) <= .info
        if let bytes = bodyMemoryBudget ?? server?.bodyMemoryBudgetBytes {
            guard bytes >= 1 << 20 else { throw ValidationError("--body-memory-budget must be at least 1048576 bytes") }
            gateway.bodyMemoryBudget = bytes
        }
        if let adminTimeout = adminTimeout ?? server?.adminTimeoutSeconds {
            guard adminTimeout >= 1 else {
                throw ValidationError("--admin-timeout (server.admin_timeout_seconds) must be at least 1 second")
            }
            gateway.adminTimeout = .seconds(adminTimeout)
        }
        gateway.serverTLS = try serverTLS()
        if let holdTtl {
            guard holdTtl >= 2 else { throw ValidationError("--hold-ttl must be at least 2 seconds") }
            gateway.holdTTL = TimeInterval(holdTtl)
        }
        gateway.nodeID = nodeId ?? "\(ProcessInfo.processInfo.hostName)-\(gateway.port)"
        if let region { gateway.region = region }
        if let loadBalancing {
            guard let mode = RoutingPlanner.LoadBalancing(rawValue: loadBalancing) else {
                throw ValidationError("--load-balancing must be price-weighted or catalog-order")
            }
            gateway.loadBalancing = mode
        }
        guard let demoAmount = Money(decimal: demoCredits ?? "10"), demoAmount >= .zero else {
            throw ValidationError("--demo-credits must be a non-negative decimal amount")
        }

        var catalog = try Catalog.shipped()
        catalog.merge(providers: file.providers ?? [], models: file.models ?? [])
        try catalog.validate()
        var providerKeys: [String: String] = [:]
        if let simulatorURL = upstreams.simulatorURL {
            catalog.pointAllProviders(at: simulatorURL)
            for slug in catalog.providers.keys { providerKeys[slug] = "sk-simulated" }
        } else {
            let environment = ProcessInfo.processInfo.environment
            for (slug, provider) in catalog.providers {
                if let key = environment[provider.apiKeyEnv], !key.isEmpty { providerKeys[slug] = key }
            }
        }

        var configuration = NodeConfiguration(
            gateway: gateway, catalog: catalog, providerKeys: providerKeys,
            ledger: try ledgerSettings(file).map { .postgres($0) } ?? .sqlite(path: dataDir + "/ledger.sqlite"),
            spoolPath: spool ?? dataDir + "/settlements.spool")
        if let maxSpoolAge {
            guard maxSpoolAge >= 1 else { throw ValidationError("--max-spool-age must be at least 1 second") }
            configuration.maxSpoolAge = TimeInterval(maxSpoolAge)
        }
        if let leaseSlice {
            guard let slice = Money(decimal: leaseSlice), slice > .zero else {
                throw ValidationError("--lease-slice must be a positive amount")
            }
            configuration.leaseSlice = slice
        }
        configuration.drain = DrainSettings(
            delay: .seconds(try nonNegative(drainDelay ?? file.drain?.delaySeconds, default: 10, flag: "--drain-delay")),
            timeout: .seconds(try nonNegative(drainTimeout ?? file.drain?.timeoutSeconds, default: 60, flag: "--drain-timeout")))
        configuration.cluster = try clusterSettings(gateway: gateway)
        configuration.peerTrustRoots = try peerCaFile.map { path in
            do { return try NIOSSLCertificate.fromPEMFile(path) } catch {
                throw ValidationError("--peer-ca-file \(path): not a readable PEM certificate (\(error))")
            }
        }
        configuration.starterKeys = try starterKeys(demoCredits: demoAmount, clusterMode: configuration.postgres != nil)
        configuration.console = try file.consoleSettings(environment: ProcessInfo.processInfo.environment)
        configuration.tracing = try file.traceSettings(environment: ProcessInfo.processInfo.environment)
        configuration.alerts = try file.alertSettings(environment: ProcessInfo.processInfo.environment)
        return configuration
    }

    /// The operator and demo keys. The embedded default makes what is missing; a cluster node
    /// (on a shared PostgreSQL ledger) must be given the admin key and makes the demo account only
    /// when `--demo-credits` asks for it, so no node ever adds an admin key or credit on its own.
    func starterKeys(demoCredits amount: Money, clusterMode: Bool) throws -> StarterKeys {
        let environment = ProcessInfo.processInfo.environment
        let admin: StarterKeys.Source
        switch (environment["SIGNALBOX_ADMIN_KEY"], adminKeyFile) {
        case (.some, .some):
            throw ValidationError("give the admin key once: SIGNALBOX_ADMIN_KEY or --admin-key-file, not both")
        case (let key?, nil):
            admin = .provided(key, origin: "SIGNALBOX_ADMIN_KEY")
        case (nil, let path?):
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("--admin-key-file \(path) can't be read")
            }
            admin = .provided(text.trimmingCharacters(in: .whitespacesAndNewlines), origin: "the key in --admin-key-file \(path)")
        case (nil, nil):
            guard !clusterMode else {
                throw ValidationError(
                    "a node on a shared PostgreSQL ledger needs the operator admin key: set SIGNALBOX_ADMIN_KEY or --admin-key-file FILE "
                        + "(an sk- key of 20 or more characters, the same on every node); it never makes one")
            }
            admin = .savedOrMinted(file: dataDir + "/admin-key")
        }
        var demo: StarterKeys.Source? =
            environment["SIGNALBOX_DEMO_KEY"].map { .provided($0, origin: "SIGNALBOX_DEMO_KEY") }
            ?? .savedOrMinted(file: dataDir + "/demo-key")
        if clusterMode && demoCredits == nil { demo = nil }
        let keys = StarterKeys(admin: admin, demo: demo, demoCredits: amount)
        do { try keys.validate() } catch { throw ValidationError("\(error)") }
        return keys
    }

    func nonNegative(_ value: Int?, default fallback: Int, flag: String) throws -> Int {
        guard let value else { return fallback }
        guard value >= 0 else { throw ValidationError("\(flag) must be 0 or more seconds; got \(value)") }
        return value
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

    /// The node's gossip settings when `--gossip-bind` is given.
    func clusterSettings(gateway: GatewayConfiguration) throws -> ClusterSettings? {
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
        let seedList = try (seeds ?? "").split(separator: ",").map { text -> MemberAddress in
            guard let address = MemberAddress(text.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--seeds must be HOST:PORT,HOST:PORT,…; got \(text)")
            }
            return address
        }
        let scheme = gateway.serverTLS == nil ? "http" : "https"
        let apiHost = ["0.0.0.0", "::"].contains(gateway.host) ? advertised.host : gateway.host
        var settings = ClusterSettings(
            bind: bind, advertised: advertised, seeds: seedList, keyringPath: clusterKeyFile,
            apiURL: advertiseUrl ?? "\(scheme)://\(apiHost):\(gateway.port)", tablesPath: dataDir + "/routing-tables.json")
        if let gossipMaxDatagram {
            guard (512...65_000).contains(gossipMaxDatagram) else {
                throw ValidationError("--gossip-max-datagram must be between 512 and 65000 bytes; got \(gossipMaxDatagram)")
            }
            settings.swim.maxDatagramBytes = gossipMaxDatagram
        }
        return settings
    }
}

/// What `serve` prints once the node listens: where it is, what it routes to, and the starter
/// keys — in full only when this start minted them for the embedded default (shown once, like a
/// key made with `keys create`); otherwise by fingerprint, so keys never reach a log.
struct Banner: Sendable {
    let scheme: String
    let host: String
    let models: Int
    let upstreams: String
    let ledger: String
    let demoCredits: Money
    let keySources: (admin: StarterKeys.Source?, demo: StarterKeys.Source?)
    let showsMintedKeys: Bool
    let format: LogFormat

    init(configuration: NodeConfiguration, upstreams: String, ledger: String, showsMintedKeys: Bool, format: LogFormat) {
        self.format = format
        scheme = configuration.gateway.serverTLS == nil ? "http" : "https"
        host = configuration.gateway.host
        models = configuration.catalog.models.count
        self.upstreams = upstreams
        self.ledger = ledger
        demoCredits = configuration.starterKeys?.demoCredits ?? .zero
        keySources = (configuration.starterKeys?.admin, configuration.starterKeys?.demo)
        self.showsMintedKeys = showsMintedKeys
    }

    func describe(_ key: StarterKeys.Key?, source: StarterKeys.Source?) -> String {
        guard let key, let source else { return "(none)" }
        switch source {
        case .provided(_, let origin): return "\(key.fingerprint) (from \(origin))"
        case .savedOrMinted(let file):
            if key.minted && showsMintedKeys { return "\(key.value)   (new; saved in \(file), shown only now)" }
            return "\(key.fingerprint) (in \(file))"
        }
    }

    func print(_ serving: ServingNode) {
        let port = serving.port
        let demo = describe(serving.starterKeys?.demo, source: keySources.demo)
        let admin = describe(serving.starterKeys?.admin, source: keySources.admin)
        if format == .json {
            // The banner as one log line: fingerprints and key files, never a key.
            JSONLogHandler.write(
                .object(
                    JSONObject([
                        ("time", .string(JSONLogHandler.timestamp())), ("level", "notice"), ("logger", "signalbox"),
                        ("message", "serving"), ("url", .string("\(scheme)://\(host):\(port)/api/v1")),
                        ("console", .string("\(scheme)://\(host):\(port)/console/")), ("models", .int(Int64(models))),
                        ("upstreams", .string(upstreams)), ("ledger", .string(ledger)), ("demo_key", .string(demo)),
                        ("admin_key", .string(admin)),
                    ])))
            return
        }
        let demoFile: String? = if case .savedOrMinted(let file) = keySources.demo { file } else { nil }
        let credit = serving.starterKeys?.demo == nil ? "" : "  ($\(demoCredits.decimalString) demo credit at start)"
        var text = """

            Signalbox is serving at \(scheme)://\(host):\(port)/api/v1
              models:     \(models) (\(upstreams))
              ledger:     \(ledger)
              demo key:   \(demo)\(credit)
              admin key:  \(admin)

            """
        if let demoFile {
            text += """
                Try:
                  curl \(scheme)://\(host):\(port)/api/v1/chat/completions \\
                    -H "Authorization: Bearer $(cat \(demoFile))" -H "Content-Type: application/json" \\
                    -d '{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}'

                """
        }
        // Written straight to the file descriptor: print() would sit in a buffer when stdout is a pipe.
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
