import Alerts
import Console
import Crypto
import Foundation
import Gateway
import Gossip
import Ledger
import NIOSSL
import SignalboxCore

/// Everything a router node is built from: one value, filled by `signalbox serve` from its flags,
/// configuration file and environment, and by the tests directly. `SignalboxNode` turns it into
/// the node's services.
public struct NodeConfiguration: Sendable, CustomStringConvertible {
    /// The HTTP surface: listener, TLS, timeouts, node id, region, lease lifetime.
    public var gateway: GatewayConfiguration
    /// The models and providers the node routes to.
    public var catalog: Catalog
    /// Provider slug → API key sent upstream. A provider without one is never attempted.
    public var providerKeys: [String: String]
    /// Where the credit ledger lives.
    public var ledger: LedgerLocation
    /// The settlement spool: where charges wait while the ledger is unreachable (its rejects go
    /// beside it, with `.rejected` appended).
    public var spoolPath: String
    /// How long a settlement may wait in the spool before the node refuses paid requests.
    public var maxSpoolAge: TimeInterval = 3600
    /// The smallest slice of an account's credit the node leases at a time.
    public var leaseSlice = LeasePolicy().slice
    /// Gossip membership; nil runs the node alone.
    public var cluster: ClusterSettings?
    /// CA certificates that sign the other nodes' certificates, for forwarding to nodes that
    /// serve HTTPS; nil forwards with the system's trust roots.
    public var peerTrustRoots: [NIOSSLCertificate]?
    /// Accounts and keys made at start (the embedded default's demo and operator keys); nil makes none.
    public var starterKeys: StarterKeys?
    /// How the node drains on SIGTERM. Nodes made in tests default to no delay.
    public var drain = DrainSettings(delay: .zero)
    /// Cuts the drain delay short (`signalbox serve` skips it on SIGINT).
    public var drainGate = DrainDelayGate()
    /// The operator console at `/console/`.
    public var console = NodeConsole()
    /// Where spans go (OTLP/HTTP); nil exports none.
    public var tracing: TraceSettings?
    /// Where alerts go and what they are about; nil sends none.
    public var alerts: AlertSettings?

    public init(
        gateway: GatewayConfiguration = GatewayConfiguration(), catalog: Catalog, providerKeys: [String: String],
        ledger: LedgerLocation, spoolPath: String
    ) {
        self.gateway = gateway
        self.catalog = catalog
        self.providerKeys = providerKeys
        self.ledger = ledger
        self.spoolPath = spoolPath
    }

    /// How a node serves the console; the session key comes from the operator admin key once the
    /// node has it, so every node of a cluster signs sessions alike.
    public struct NodeConsole: Sendable {
        public var enabled = true
        public var policy = SessionPolicy()
        /// `Secure` cookies; nil: when the node serves TLS.
        public var secureCookies: Bool?
        public var oidc: OIDCSettings?
        /// Set by the node from its admin key; a random key (sessions valid on this node only) when it has none.
        public var sessionKey: SymmetricKey?
        /// The operator admin key's hash when `sessionKey` was derived from it (sessions end while it is revoked).
        public var signingKeyHash: String?
        public var loginBurst = 10
        public var loginRefill: TimeInterval = 30
        public init() {}
    }

    /// A summary without the keys it holds (provider keys, starter keys), for logs.
    public var description: String {
        "NodeConfiguration(node: \(gateway.nodeID), region: \(gateway.region), port: \(gateway.port), "
            + "models: \(catalog.models.count), ledger: \(postgres.map { "\($0)" } ?? "embedded"))"
    }

    /// The PostgreSQL ledger's settings, when the node runs on one (cluster mode).
    public var postgres: PostgresSettings? {
        if case .postgres(let settings) = ledger { return settings }
        return nil
    }

    /// The node's leases live as long as its holds would, and are given back after 10 s idle (a
    /// quarter of the lifetime when that is shorter).
    var leasePolicy: LeasePolicy {
        LeasePolicy(slice: leaseSlice, ttl: gateway.holdTTL, idleRelease: min(10, gateway.holdTTL / 4))
    }

    /// How often the node voids leases whose node died: half their lifetime, between 1 and 30 s.
    var leaseExpiryInterval: Duration { .seconds(min(30, max(1, gateway.holdTTL / 2))) }
}

/// Where a node's credit ledger lives.
public enum LedgerLocation: Sendable {
    /// The embedded SQLite ledger in this file (nil: in memory, gone when the node stops).
    case sqlite(path: String?)
    /// The cluster's PostgreSQL ledger.
    case postgres(PostgresSettings)

    /// The cluster's PostgreSQL ledger at `url`, with a serving node's defaults.
    public static func postgres(url: String) throws -> LedgerLocation {
        var settings = try PostgresSettings(url: url)
        settings.statementTimeout = .milliseconds(Int64(PostgresLedgerStore.statementTimeout * 1000))
        return .postgres(settings)
    }
    /// A store the caller opened, closes and migrates (tests wrap one in a fault injector).
    case store(any LedgerStore)
}

/// How a node joins the cluster's gossip.
public struct ClusterSettings: Sendable {
    /// The UDP address the node listens on.
    public var bind: MemberAddress
    /// The address other nodes reach this node's gossip at.
    public var advertised: MemberAddress
    /// Nodes to join through.
    public var seeds: [MemberAddress]
    /// The cluster key file (`signalbox cluster keygen`).
    public var keyringPath: String
    /// Re-reads the key file at once when asked (`serve` asks on SIGHUP).
    public var keyringReload: KeyringReloadRequests?
    public var swim = SwimSettings()
    /// This node's API base URL for the other nodes (region forwarding).
    public var apiURL: String
    /// Where the node keeps the latest routing table of every region, to load at start.
    public var tablesPath: String?

    public init(
        bind: MemberAddress, advertised: MemberAddress, seeds: [MemberAddress], keyringPath: String, apiURL: String,
        tablesPath: String?
    ) {
        self.bind = bind
        self.advertised = advertised
        self.seeds = seeds
        self.keyringPath = keyringPath
        self.apiURL = apiURL
        self.tablesPath = tablesPath
    }
}
