import Alerts
import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore
import Tracing

/// A request that passed validation, routing and the credit check, with its hold placed.
///
/// A class: the request's tasks, closures and async frames all hold it, and it is fixed once
/// admitted; a reference is one word where the value was ~570 bytes with a retain per field.
final class PreparedChat: Sendable {
    let request: ChatRequest
    let key: KeyRecord
    let attempts: [PlannedAttempt]
    let generationID: String
    let created: Int64
    /// Credit reserved (from the node's lease) for the worst case, nil for free requests.
    let reservation: CreditReservation?
    /// Reserved against the key's spending limit (zero without a limit).
    let keyReservation: Money
    let startedAt: ContinuousClock.Instant
    let startedDate: Date
    /// The client's `Idempotency-Key`, claimed for this request.
    let idempotencyKey: String?
    /// The request's spans, when the node exports traces.
    let trace: RequestTrace?
    /// The request body's share of the node's body memory budget: held for as long as the
    /// request is (a stream's body closure holds it to the end), given back when it ends.
    private let bodyMemory = NIOLockedValueBox<BodyBudget.Reservation?>(nil)

    func hold(bodyMemory reservation: BodyBudget.Reservation) { bodyMemory.withLockedValue { $0 = reservation } }

    init(
        request: ChatRequest, key: KeyRecord, attempts: [PlannedAttempt], generationID: String, created: Int64,
        reservation: CreditReservation?, keyReservation: Money, startedAt: ContinuousClock.Instant, startedDate: Date,
        idempotencyKey: String?, trace: RequestTrace?
    ) {
        self.request = request
        self.key = key
        self.attempts = attempts
        self.generationID = generationID
        self.created = created
        self.reservation = reservation
        self.keyReservation = keyReservation
        self.startedAt = startedAt
        self.startedDate = startedDate
        self.idempotencyKey = idempotencyKey
        self.trace = trace
    }
}

/// How an upstream attempt ended.
struct AttemptResult: Sendable {
    var attempt: PlannedAttempt
    var usage: TokenUsage?
    var accumulator: CompletionAccumulator
    /// Output pieces delivered to the client (or collected, when not streaming).
    var delivered: Int
    var finishReason: String?
    var firstTokenAt: ContinuousClock.Instant?
    /// An embeddings request's vectors, one per input.
    var embeddings: [[Float]]? = nil
}

/// Shared between an attempt and its watchdog.
struct AttemptProgress: Sendable {
    var lastActivity: ContinuousClock.Instant
    var firstToken: ContinuousClock.Instant?
    var delivered = 0
    /// Some of this attempt's events were handed to a streaming client: it can no longer fail over.
    var emitted = false
    var upstreamID: String?
    var usage: TokenUsage?
    /// The headers that carry this attempt's trace context upstream (none without tracing).
    var propagation: [(String, String)] = []
}

/// The request path after authentication: plan → hold → attempt (with failover) → settle.
///
/// Streams are written to an `emit` callback as the upstream produces them; non-streamed
/// requests are assembled from the same upstream stream. Every path ends with the hold posted
/// or voided: zero completion insurance means only a successful run is charged.
///
/// A class: every request's closures and async frames hold it, and a reference is one word
/// where the value was ~600 bytes and two dozen retains per copy.
final class ChatPipeline: Sendable {
    let catalog: Catalog
    let planner: RoutingPlanner
    let ledger: any LedgerStore
    let credit: CreditLeases
    let transport: any UpstreamTransport
    let configuration: GatewayConfiguration
    /// Provider slug → API key to send upstream.
    let providerKeys: [String: String]
    let logger: Logger
    let metrics: GatewayMetrics
    let health: HealthTracker
    let cluster: ClusterNode?
    let keyLimits = KeyLimits()
    let freeTier = FreeTierAdmission()
    let accessLog: AccessLog
    let tracer: (any Tracer)?
    let alerts: AlertDispatcher?
    let clock = ContinuousClock()
    /// Watchdogs and client-gone checks for every running request, on one timer; the interval
    /// is how late a timeout or a departed client may be noticed.
    let watch = PollingWatch(every: .milliseconds(50))

    init(
        catalog: Catalog, planner: RoutingPlanner, ledger: any LedgerStore, credit: CreditLeases,
        transport: any UpstreamTransport, configuration: GatewayConfiguration, providerKeys: [String: String],
        logger: Logger, metrics: GatewayMetrics, health: HealthTracker, cluster: ClusterNode?, tracer: (any Tracer)?,
        alerts: AlertDispatcher?
    ) {
        self.catalog = catalog
        self.planner = planner
        self.ledger = ledger
        self.credit = credit
        self.transport = transport
        self.configuration = configuration
        self.providerKeys = providerKeys
        self.logger = logger
        self.metrics = metrics
        self.health = health
        self.cluster = cluster
        self.tracer = tracer
        self.alerts = alerts
        accessLog = AccessLog(enabled: configuration.accessLog)
    }
}
