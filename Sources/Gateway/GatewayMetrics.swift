import Gossip
import Ledger
import Hummingbird
import NIOConcurrencyHelpers
import Prometheus
import SignalboxCore

/// The node's Prometheus metrics, served at `/metrics`.
///
/// Labels stay low-cardinality: route patterns, status codes, provider slugs. The registry is
/// injected, so tests and several gateways in one process never share a global.
public struct GatewayMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let failovers: Counter
    let settlements: Counter
    let settlementBatches: Counter
    /// The same requests by minute, for the console's charts (this node only, since it started).
    public let tally = NIOLockedValueBox(RequestTally())

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        settlements = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "ledger_settlements", unitName: "total",
                helpText: "Request settlements committed to the ledger"))
        settlementBatches = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "ledger_settlement_batches", unitName: "total",
                helpText: "Ledger transactions that committed settlements (group commit)"))
        failovers = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "failovers", unitName: "total",
                helpText: "Requests moved to another endpoint after an upstream failure"))
    }

    static var requests: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "http_requests", unitName: "total",
            helpText: "HTTP requests by route and status")
    }
    static var attempts: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "upstream_attempts", unitName: "total",
            helpText: "Upstream calls by provider and outcome (ok or the failure code)")
    }
    static var firstToken: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "upstream_first_token", unitName: "seconds",
            helpText: "Time from sending an upstream request to its first token")
    }
    static let buckets: [Duration] = [
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10), .seconds(30),
    ]

    func request(route: String, status: Int) {
        registry.makeCounter(descriptor: Self.requests, labels: [("route", route), ("status", String(status))]).increment()
        if RequestTally.countedRoutes.contains(route) { tally.withLockedValue { $0.request(failed: status >= 500 || status == 429) } }
    }

    func attempt(provider: String, outcome: String) {
        registry.makeCounter(descriptor: Self.attempts, labels: [("provider", provider), ("outcome", outcome)]).increment()
    }

    func firstToken(provider: String, after duration: Duration) {
        registry.makeDurationHistogram(descriptor: Self.firstToken, labels: [("provider", provider)], buckets: Self.buckets)
            .record(duration)
        let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        tally.withLockedValue { $0.firstToken(milliseconds: milliseconds) }
    }

    // MARK: OpenTelemetry GenAI conventions (gen_ai.client.token.usage, gen_ai.server.time_to_first_token,
    // gen_ai.client.operation.duration), as Prometheus names; attributes become labels.

    static var tokenUsage: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gen_ai", subsystem: "client", metricName: "token_usage", unitName: nil,
            helpText: "Tokens per request by type (input, output), provider and model")
    }
    static var timeToFirstToken: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gen_ai", subsystem: "server", metricName: "time_to_first_token", unitName: "seconds",
            helpText: "Time from receiving a request to its first token, by provider and model")
    }
    static var operationDuration: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "gen_ai", subsystem: "client", metricName: "operation_duration", unitName: "seconds",
            helpText: "Time from receiving a request to its end, by provider, model and outcome")
    }
    static var spend: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "spend_usd", unitName: "total",
            helpText: "USD charged to accounts, by provider and model (the ledger holds the exact amounts)")
    }
    /// The buckets the OpenTelemetry GenAI conventions advise.
    static let tokenBuckets: [Double] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262_144, 1_048_576, 4_194_304]
    static let firstTokenBuckets: [Double] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
    static let durationBuckets: [Double] = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]

    /// A request that ran, once it settled.
    func generation(_ record: GenerationRecord, outcome: String) {
        let provider = record.providerTag ?? "none"
        let model = [("gen_ai_system", provider), ("gen_ai_request_model", record.model)]
        registry.makeValueHistogram(
            descriptor: Self.tokenUsage, labels: model + [("gen_ai_token_type", "input")], buckets: Self.tokenBuckets
        )
        .record(Double(record.usage.promptTokens))
        registry.makeValueHistogram(
            descriptor: Self.tokenUsage, labels: model + [("gen_ai_token_type", "output")], buckets: Self.tokenBuckets
        )
        .record(Double(record.usage.completionTokens))
        if outcome == "success" {
            registry.makeValueHistogram(descriptor: Self.timeToFirstToken, labels: model, buckets: Self.firstTokenBuckets)
                .record(Double(record.latencyMs) / 1000)
        }
        registry.makeValueHistogram(
            descriptor: Self.operationDuration, labels: model + [("outcome", outcome)], buckets: Self.durationBuckets
        ).record(Double(record.latencyMs + record.generationTimeMs) / 1000)
        if record.cost > .zero {
            registry.makeCounter(descriptor: Self.spend, labels: [("provider", provider), ("model", record.model)])
                .increment(by: Double(record.cost.nanos) / Double(Money.scale))
        }
    }

    func failover() {
        failovers.increment()
        tally.withLockedValue { $0.failover() }
    }

    static var overage: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "ledger_overage_usd", unitName: "total",
            helpText: "USD providers billed beyond requests' reservations, booked to platform:overage")
    }

    /// An upstream charged more than its request's reservation; the ledger keeps the exact amount,
    /// the counter a float for dashboards.
    func overage(provider: String, amount: Money) {
        registry.makeCounter(descriptor: Self.overage, labels: [("provider", provider)])
            .increment(by: Double(amount.nanos) / Double(Money.scale))
    }

    static var alertDeliveries: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "signalbox", metricName: "alert_deliveries", unitName: "total",
            helpText: "Alert webhook deliveries by outcome: delivered, failed (after every try), dropped (queue full)")
    }

    /// An alert delivery ended (`AlertDispatcher`'s outcomes).
    public func alertDelivery(outcome: String) {
        registry.makeCounter(descriptor: Self.alertDeliveries, labels: [("outcome", outcome)]).increment()
    }

    /// One group-committed batch of `size` settlements.
    public func settlementBatch(size: Int) {
        settlements.increment(by: Int64(size))
        settlementBatches.increment()
    }

    /// Gossip figures, read from the agent when `/metrics` is scraped.
    func gossip(stats: GossipAgent.Stats, members: [Member], awareness: Int, socketUp: Bool, queued: Int) {
        let datagrams = MetricNameDescriptor(
            namespace: "signalbox", metricName: "gossip_datagrams", unitName: "",
            helpText: "Gossip frames since start (datagrams and TCP requests): received, sent, and dropped for any reason")
        for (kind, value) in [("received", stats.received), ("sent", stats.sent), ("dropped", stats.dropped)] {
            registry.makeGauge(descriptor: datagrams, labels: [("kind", kind)]).set(Int64(value))
        }
        let dropped = MetricNameDescriptor(
            namespace: "signalbox", metricName: "gossip_dropped", unitName: "",
            helpText: "Gossip frames dropped since start, by reason (truncated, forged, malformed, replayed, stale)")
        for reason in GossipAgent.DropReason.allCases {
            registry.makeGauge(descriptor: dropped, labels: [("reason", reason.rawValue)]).set(Int64(stats.droppedByReason[reason] ?? 0))
        }
        let bySender = MetricNameDescriptor(
            namespace: "signalbox", metricName: "gossip_dropped_by_sender", unitName: "",
            helpText: "Gossip frames dropped since start, by sender address (at most 256 senders, then 'other')")
        for (sender, count) in stats.droppedBySender {
            registry.makeGauge(descriptor: bySender, labels: [("sender", sender)]).set(Int64(count))
        }
        let plain: [(String, String, Int)] = [
            (
                "gossip_send_errors", "Gossip datagrams the socket refused to send (a firewall's EPERM, an unreachable network, …)",
                stats.sendErrors
            ),
            ("gossip_socket_failures", "Times the gossip UDP socket failed or closed and was bound again", stats.socketFailures),
            ("gossip_socket_up", "1 while the gossip UDP socket is bound, 0 while it is down", socketUp ? 1 : 0),
            ("gossip_queued_updates", "Membership and state updates waiting to be gossiped", queued),
        ]
        for (name, help, value) in plain {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "signalbox", metricName: name, unitName: "", helpText: help))
                .set(Int64(value))
        }
        let streams = MetricNameDescriptor(
            namespace: "signalbox", metricName: "gossip_streams", unitName: "",
            helpText: "Gossip TCP state transfers since start: served, opened, failed")
        for (kind, value) in [("served", stats.streamsServed), ("opened", stats.streamsOpened), ("failed", stats.streamFailures)] {
            registry.makeGauge(descriptor: streams, labels: [("kind", kind)]).set(Int64(value))
        }
        let memberGauge = MetricNameDescriptor(
            namespace: "signalbox", metricName: "gossip_members", unitName: "",
            helpText: "Cluster members by state, as this node sees them")
        for status in MemberStatus.allCases {
            registry.makeGauge(descriptor: memberGauge, labels: [("state", status.rawValue)])
                .set(Int64(members.filter { $0.status == status }.count))
        }
        registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "gossip_local_health", unitName: "",
                helpText: "Lifeguard local health multiplier minus one (0: healthy)")
        )
        .set(Int64(awareness))
    }

    /// Client connections open now, and those closed at once for a limit since start.
    func connections(open: Int, refused: Int) {
        registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "connections_open", unitName: "", helpText: "Client connections open now")
        )
        .set(Int64(open))
        registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "signalbox", metricName: "connections_refused_total", unitName: "",
                helpText: "Client connections closed at once because their address or the node was at its connection limit")
        )
        .set(Int64(refused))
    }

    /// The ledger as this node sees it, read when `/metrics` is scraped.
    func ledger(status: SettlementCommitter.Status, leases: [LeaseBook.Lease]) {
        let gauges: [(String, String, Int64)] = [
            ("ledger_reachable", "1 while the ledger answers, 0 while settlements go to the spool", status.ledgerReachable ? 1 : 0),
            ("ledger_spooled_settlements", "Settlements waiting in the spool for the ledger", Int64(status.spooled)),
            ("ledger_held_settlements", "Settlements neither committed nor spooled (the spool could not be written)", Int64(status.held)),
            ("ledger_rejected_settlements", "Settlements set aside in the reject file since start", Int64(status.rejected)),
            ("leases_open", "Credit leases this node holds on accounts", Int64(leases.count)),
        ]
        for (name, help, value) in gauges {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "signalbox", metricName: name, unitName: "", helpText: help))
                .set(value)
        }
        let money: [(String, String, Money)] = [
            ("leases_granted_usd", "Credit this node holds in leases", leases.reduce(.zero) { $0 + $1.granted }),
            ("leases_reserved_usd", "Of that, what requests in flight reserve", leases.reduce(.zero) { $0 + $1.reserved }),
        ]
        for (name, help, amount) in money {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "signalbox", metricName: name, unitName: "", helpText: help))
                .set(Double(amount.nanos) / Double(Money.scale))
        }
    }

    func exposition() -> [UInt8] { registry.emitToBuffer() }
}

/// Counts every response by route pattern and status.
struct MetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: GatewayMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            let response = try await next(request, context)
            metrics.request(route: context.endpointPath ?? "unmatched", status: response.status.code)
            return response
        } catch {
            // A thrown error becomes its response further out; it is counted with the status it will have.
            let status = (error as? APIError)?.statusCode ?? (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.request(route: context.endpointPath ?? "unmatched", status: status)
            throw error
        }
    }
}
