import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

/// What a router node is made of; built by the executable (or a test) and handed to `buildRouter`.
public struct GatewayDependencies: Sendable {
    public var configuration: GatewayConfiguration
    public var catalog: Catalog
    public var ledger: any LedgerStore
    public var transport: any UpstreamTransport
    /// Provider slug → API key sent upstream (read from each provider's `api_key_env`).
    public var providerKeys: [String: String]
    public var logger: Logger
    public var metrics: GatewayMetrics
    public var health: HealthTracker
    /// The node's leases on account credit, and the group commit (with its spool) behind them.
    public var credit: CreditLeases
    public var committer: SettlementCommitter
    /// The node's gossip membership; nil for a node running alone.
    public var cluster: ClusterNode?
    /// The client that forwards region-pinned requests to other nodes (one trusting the peers' CA
    /// when they serve HTTPS); nil uses the process-wide plain client.
    /// How requests pinned to another region reach that region's node (the upstream transport
    /// by default).
    public var forwardingTransport: (any UpstreamTransport)?

    /// Without `credit`, the node keeps leases with default settings and spools to a new
    /// temporary directory (for tests; `signalbox serve` passes its own).
    public init(
        configuration: GatewayConfiguration, catalog: Catalog, ledger: any LedgerStore,
        transport: any UpstreamTransport, providerKeys: [String: String], logger: Logger,
        metrics: GatewayMetrics = GatewayMetrics(), health: HealthTracker = HealthTracker(),
        credit: CreditLeases? = nil, cluster: ClusterNode? = nil, forwardingTransport: (any UpstreamTransport)? = nil
    ) {
        self.cluster = cluster
        self.forwardingTransport = forwardingTransport
        self.metrics = metrics
        self.health = health
        if let credit {
            self.credit = credit
            self.committer = credit.committer
        } else {
            let spoolPath = FileManager.default.temporaryDirectory
                .appendingPathComponent("signalbox-\(UUID().uuidString)/settlements.spool").path
            let committer = SettlementCommitter(
                store: ledger, spool: try? SettlementSpool(path: spoolPath), logger: logger,
                onCommit: { [metrics] in metrics.settlementBatch(size: $0) })
            self.committer = committer
            self.credit = CreditLeases(
                store: ledger, committer: committer, nodeID: configuration.nodeID,
                policy: LeasePolicy(ttl: configuration.holdTTL), logger: logger)
        }
        self.configuration = configuration
        self.catalog = catalog
        self.ledger = ledger
        self.transport = transport
        self.providerKeys = providerKeys
        self.logger = logger
    }
}

/// Whether the node takes traffic: false before start-up completes and while draining.
public final class Readiness: Sendable {
    private let state = NIOLockedValueBox(false)
    public init(ready: Bool = false) { state.withLockedValue { $0 = ready } }
    public var isReady: Bool { state.withLockedValue { $0 } }
    public func set(_ ready: Bool) { state.withLockedValue { $0 = ready } }
}
