import Alerts
import AsyncHTTPClient
import Console
import Crypto
import Foundation
import Gateway
import Gossip
import Ledger
import Logging
import Providers
import ServiceLifecycle
import SignalboxCore

/// One router node as a `Service`: it opens the ledger, runs the ledger's connection pool as
/// the first service of its group (so it stops last), migrates the ledger, makes the starter keys,
/// and then runs every other service `assemble` builds. `signalbox serve` and the tests both run
/// a node this way; nothing is wired differently for tests.
public struct SignalboxNode: Service, CustomStringConvertible {
    public let configuration: NodeConfiguration
    let logger: Logger
    let onServing: @Sendable (ServingNode) async -> Void

    /// `onServing` runs once the HTTP listener is bound (with the port, useful with port 0).
    public init(
        _ configuration: NodeConfiguration, logger: Logger, onServing: @escaping @Sendable (ServingNode) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onServing = onServing
    }

    /// What the service group logs: never the configuration, which holds keys.
    public var description: String { "SignalboxNode(\(configuration.gateway.nodeID))" }

    public func run() async throws {
        switch configuration.ledger {
        case .sqlite(let path):
            let store = try await SQLiteLedgerStore.open(path: path, logger: logger)
            do {
                try await run(ledger: store, pool: nil, migrate: true)
            } catch {
                try? await store.close()
                throw error
            }
            try await store.close()
        case .postgres(let settings):
            guard try await waitForLedger(settings) else { return }
            let (store, pool) = try PostgresLedgerStore.make(settings: settings, logger: logger)
            try await run(ledger: store, pool: pool, migrate: true)
        case .store(let store):
            try await run(ledger: store, pool: nil, migrate: false)
        }
    }

    /// Opens one connection to the ledger before anything else, so a node that can't reach it
    /// says why within the connect timeout. What retrying can't fix (a password, a missing
    /// database, TLS) stops the node; a server that is down or slow is tried again every 2 s
    /// (saying so each time the reason changes, and every 30 s), as a node may start before
    /// its database does. False when a shutdown came first.
    func waitForLedger(_ settings: PostgresSettings) async throws -> Bool {
        var lastReported: (problem: String, at: ContinuousClock.Instant)?
        while true {
            let problem = try? await cancelWhenGracefulShutdown { [logger] in await settings.diagnose(logger: logger) }
            if Task.isShuttingDownGracefully { return false }
            guard let problem else {
                if lastReported != nil { logger.notice("the PostgreSQL ledger answers", metadata: ["ledger": "\(settings)"]) }
                return true
            }
            if problem.isPermanent { throw problem }
            if lastReported?.problem != problem.message || ContinuousClock.now - lastReported!.at >= .seconds(30) {
                logger.error("\(problem.message); trying again every 2 s")
                lastReported = (problem.message, .now)
            }
            do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(2)) } } catch { return false }
            if Task.isShuttingDownGracefully { return false }
        }
    }

    private func run(ledger: any LedgerStore, pool: (any Service)?, migrate: Bool) async throws {
        let node = NodeServices(
            configuration: configuration, ledger: ledger, migrate: migrate, logger: logger, onServing: onServing)
        let services: [any Service] = (pool.map { [$0] } ?? []) + [node]
        try await ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger)).run()
    }

    /// Every service of a node on an open ledger, in the order they start; they stop in reverse.
    ///
    /// - The upkeep (committer start and flush, lease renewal, expiry) comes before the HTTP
    ///   server, so it stops after it: in-flight requests settle and the leases go back last.
    /// - Gossip comes before the server too: the node announces it leaves once its requests finished.
    /// - The drain comes last, so it is the first to hear of a shutdown: readiness turns off,
    ///   and the server keeps accepting for the drain delay before it closes its listener; then
    ///   in-flight requests get the drain timeout to finish.
    public static func assemble(
        _ configuration: NodeConfiguration, ledger: any LedgerStore, logger: Logger,
        onServing: @escaping @Sendable (ServingNode) async -> Void
    ) throws -> AssembledNode {
        let gateway = configuration.gateway
        let metrics = GatewayMetrics()
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: configuration.spoolPath),
            rejects: try SettlementSpool(path: configuration.spoolPath + ".rejected"), maxSpoolAge: configuration.maxSpoolAge,
            logger: logger, onCommit: { metrics.settlementBatch(size: $0) })
        let credit = CreditLeases(
            store: ledger, committer: committer, nodeID: gateway.nodeID, policy: configuration.leasePolicy, logger: logger)
        let health = HealthTracker()
        let cluster = try configuration.cluster.map { try makeCluster($0, gateway: gateway, health: health, logger: logger) }
        let upstream = try PooledUpstreamTransport(connectTimeout: gateway.timeouts.connect)
        let forwarding = try configuration.peerTrustRoots.map {
            try PooledUpstreamTransport(connectTimeout: .seconds(5), trustRoots: $0)
        }
        let readiness = Readiness(ready: false)
        let traces = try configuration.tracing.map {
            try $0.makeExporter(nodeID: gateway.nodeID, region: gateway.region, logger: logger)
        }
        let alerts = configuration.alerts.map { settings in
            AlertDispatcher(
                settings: settings, node: gateway.nodeID, region: gateway.region, poster: HTTPWebhookPoster(client: .shared),
                logger: logger, onOutcome: { metrics.alertDelivery(outcome: $0) })
        }
        var extensions: [any RouterExtension] = []
        if configuration.console.enabled {
            let settings = configuration.console
            extensions.append(
                try Console(
                    settings: ConsoleSettings(
                        sessionKey: settings.sessionKey ?? SymmetricKey(size: .bits256), policy: settings.policy,
                        secureCookies: settings.secureCookies ?? (gateway.serverTLS != nil), oidc: settings.oidc,
                        loginBurst: settings.loginBurst, loginRefill: settings.loginRefill, signingKeyHash: settings.signingKeyHash),
                    http: HTTPClient.shared, logger: logger))
        }
        let api = RouterAPI(
            GatewayDependencies(
                configuration: gateway, catalog: configuration.catalog, ledger: ledger, transport: upstream,
                providerKeys: configuration.providerKeys, logger: logger, metrics: metrics, health: health, credit: credit,
                cluster: cluster, forwardingTransport: forwarding, tracer: traces?.tracer, alerts: alerts),
            readiness: readiness, extensions: extensions)
        let http = try api.buildApplication { port in
            await onServing(
                ServingNode(port: port, ledger: ledger, credit: credit, readiness: readiness, starterKeys: nil))
        }
        // The trace exporter starts first and stops last: it sends the spans of the requests the
        // drain let finish, and of their settlement.
        var services: [any Service] = traces.map { [$0.service] } ?? []
        // Alerts are delivered until the node stops; the watcher starts once the node's parts do.
        if let alerts { services.append(alerts) }
        services += [
            LedgerUpkeepService(ledger: ledger, credit: credit, expiryInterval: configuration.leaseExpiryInterval, logger: logger)
        ]
        if let cluster { services.append(cluster) }
        if let alerts {
            services.append(
                AlertWatcher(
                    dispatcher: alerts, ledger: ledger, committer: committer, cluster: cluster, health: health, nodeID: gateway.nodeID,
                    logger: logger))
        }
        services.append(BoundedShutdownService(http, timeout: configuration.drain.timeout, logger: logger))
        services.append(
            DrainOnShutdownService(
                readiness: readiness, delay: configuration.drain.delay, gate: configuration.drainGate, logger: logger,
                onDrain: { await cluster?.startDraining() }))
        services.append(AllocatorTrimService(logger: logger))
        return AssembledNode(
            services: services, transports: [upstream] + (forwarding.map { [$0] } ?? []), routes: api.registeredRoutes)
    }

    /// The node's gossip membership; its first incarnation is the boot time, so a restarted
    /// node outranks its old self.
    static func makeCluster(
        _ settings: ClusterSettings, gateway: GatewayConfiguration, health: HealthTracker, logger: Logger
    ) throws -> ClusterNode {
        let keyring = try ClusterKeyring(contentsOfFile: settings.keyringPath)
        let myself = Member(
            id: gateway.nodeID, address: settings.advertised, region: gateway.region,
            incarnation: UInt64(Date().timeIntervalSince1970 * 1000), apiURL: settings.apiURL)
        return ClusterNode(
            myself: myself, bind: settings.bind, seeds: settings.seeds, keyring: keyring, keyringPath: settings.keyringPath,
            keyringReload: settings.keyringReload, settings: settings.swim, health: health, tablesPath: settings.tablesPath,
            logger: logger)
    }
}

/// The services of a node (see `SignalboxNode.assemble`) and the upstream clients they share,
/// which close once every service has stopped.
public struct AssembledNode: Sendable {
    public let services: [any Service]
    let transports: [PooledUpstreamTransport]
    /// Every route the node's HTTP API serves, as `METHOD /path` (see `RouterAPI.registeredRoutes`).
    public let routes: [String]

    /// Closes the upstream clients of a node whose services never ran.
    public func close() async {
        for transport in transports { await transport.shutdown() }
    }
}

/// A node whose HTTP listener is bound, as `SignalboxNode` hands it to `onServing`.
public struct ServingNode: Sendable {
    public let port: Int
    public let ledger: any LedgerStore
    /// The node's leases on account credit.
    public let credit: CreditLeases
    /// What `/readyz` reports.
    public let readiness: Readiness
    /// The starter keys, when the configuration asks for them.
    public var starterKeys: StarterKeys.Issued?
}

/// The node on its open ledger: migrates it, makes the starter keys, then runs the assembled services.
struct NodeServices: Service, CustomStringConvertible {
    let configuration: NodeConfiguration
    let ledger: any LedgerStore
    let migrate: Bool
    let logger: Logger
    let onServing: @Sendable (ServingNode) async -> Void

    var description: String { "NodeServices(\(configuration.gateway.nodeID))" }

    func run() async throws {
        // A shutdown asked for while the ledger is still out of reach (a pool waiting to connect,
        // a migration waiting for another node's lock) stops the start-up, not only what follows it.
        let issued: StarterKeys.Issued?
        do {
            issued = try await cancelWhenGracefulShutdown { [configuration, ledger, migrate] in
                if migrate { try await ledger.migrate() }
                return try await configuration.starterKeys?.issue(in: ledger)
            }
        } catch  where Task.isShuttingDownGracefully {
            logger.notice("shut down while starting", metadata: ["during": "\(error)"])
            return
        }
        guard !Task.isShuttingDownGracefully else { return }
        let onServing = self.onServing
        var configuration = self.configuration
        if configuration.console.sessionKey == nil, let admin = issued?.admin.value {
            configuration.console.sessionKey = ConsoleSigner.derivedKey(fromAdminKey: admin)
            configuration.console.signingKeyHash = APIKeyFormat.hash(admin)
        }
        let node = try SignalboxNode.assemble(configuration, ledger: ledger, logger: logger) { serving in
            var serving = serving
            serving.starterKeys = issued
            await onServing(serving)
        }
        do {
            try await ServiceGroup(configuration: .init(services: node.services.map { .init(service: $0) }, logger: logger)).run()
        } catch {
            for transport in node.transports { await transport.shutdown() }
            throw error
        }
        for transport in node.transports { await transport.shutdown() }
    }
}
