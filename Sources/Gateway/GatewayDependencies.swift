import Alerts
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
import Tracing

/// What the HTTP API of a node works with; `SignalboxNode.assemble` (module Node) builds it.
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
    public var committer: SettlementCommitter { credit.committer }
    /// The node's gossip membership; nil for a node running alone.
    public var cluster: ClusterNode?
    /// How requests pinned to another region reach that region's node (the upstream transport
    /// when nil; a client trusting the peers' CA when they serve HTTPS).
    public var forwardingTransport: (any UpstreamTransport)?
    /// Where the spans of model requests go; nil when the node exports no traces.
    public var tracer: (any Tracer)?
    /// Where alerts go; nil when none are configured.
    public var alerts: AlertDispatcher?

    public init(
        configuration: GatewayConfiguration, catalog: Catalog, ledger: any LedgerStore, transport: any UpstreamTransport,
        providerKeys: [String: String], logger: Logger, metrics: GatewayMetrics, health: HealthTracker, credit: CreditLeases,
        cluster: ClusterNode?, forwardingTransport: (any UpstreamTransport)?, tracer: (any Tracer)? = nil,
        alerts: AlertDispatcher? = nil
    ) {
        self.configuration = configuration
        self.catalog = catalog
        self.ledger = ledger
        self.transport = transport
        self.providerKeys = providerKeys
        self.logger = logger
        self.metrics = metrics
        self.health = health
        self.credit = credit
        self.cluster = cluster
        self.forwardingTransport = forwardingTransport
        self.tracer = tracer
        self.alerts = alerts
    }
}

/// Whether the node takes traffic: false before start-up completes and while draining.
public final class Readiness: Sendable {
    private let state = NIOLockedValueBox(false)
    public init(ready: Bool = false) { state.withLockedValue { $0 = ready } }
    public var isReady: Bool { state.withLockedValue { $0 } }
    public func set(_ ready: Bool) { state.withLockedValue { $0 = ready } }
}
