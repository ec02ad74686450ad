import Foundation
import NIOSSL
import SignalboxCore

/// Everything a router node needs to know to serve. Filled from defaults, the config file,
/// environment and flags (in that order of precedence) by the `signalbox` executable.
public struct GatewayConfiguration: Sendable {
    /// This node's name in the cluster; also part of its lease ids in the ledger.
    public var nodeID: String = "node-1"
    /// The region this node serves (`--region`); its routing table applies here.
    public var region: String = "local"
    public var host: String = "127.0.0.1"
    public var port: Int = 8080
    /// Largest accepted request body.
    public var maxBodyBytes: Int = 32 * 1024 * 1024
    /// Memory that large request bodies (over 1 MiB) may take at once while they are read and
    /// handled, counted at `BodyBudget.factor` times their size; more wait their turn.
    public var bodyMemoryBudget: Int = 256 * 1024 * 1024
    public var timeouts = UpstreamTimeouts()
    /// Interval of `: SIGNALBOX PROCESSING` comments while a stream waits for its first token.
    public var keepAliveInterval: Duration = .seconds(3)
    /// How long a hold or lease lives if its node stops renewing it (a crashed node): then the
    /// ledger voids it and the credit is available again.
    public var holdTTL: TimeInterval = 15 * 60
    /// How the first endpoint is chosen when a request sets neither `provider.order` nor `sort`.
    public var loadBalancing: RoutingPlanner.LoadBalancing = .priceWeighted
    /// How long the admin and account routes, which read the ledger directly, may take before
    /// they answer 503 `ledger_unavailable` (a PostgreSQL outage must not hang them).
    public var adminTimeout: Duration = .seconds(10)
    /// Timeouts and connection counts for clients.
    public var connections = ConnectionLimits()
    /// `/metrics` answers only with the operator admin key.
    public var metricsRequireAdminKey = false
    /// One line per model request under the logger `signalbox.access` (`--no-access-log` turns it off).
    public var accessLog = true
    /// Serve HTTPS with this certificate and key (`--tls-cert`, `--tls-key`) instead of plain HTTP.
    public var serverTLS: TLSConfiguration?

    public init() {}
}

/// Upstream deadlines. Each failure moves to the next endpoint while nothing has reached the client.
public struct UpstreamTimeouts: Sendable {
    /// Opening a connection to the provider.
    public var connect: Duration = .seconds(10)
    /// From sending the request to the first token.
    public var firstToken: Duration = .seconds(60)
    /// Longest silence between two chunks once tokens flow.
    public var stall: Duration = .seconds(30)

    public init(connect: Duration = .seconds(10), firstToken: Duration = .seconds(60), stall: Duration = .seconds(30)) {
        self.connect = connect
        self.firstToken = firstToken
        self.stall = stall
    }
}
