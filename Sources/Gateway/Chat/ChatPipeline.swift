import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

/// A request that passed validation, routing and the credit check, with its hold placed.
struct PreparedChat: Sendable {
    var request: ChatRequest
    var key: KeyRecord
    var attempts: [PlannedAttempt]
    var generationID: String
    var created: Int64
    /// Credit reserved (from the node's lease) for the worst case, nil for free requests.
    var reservation: CreditReservation?
    /// Reserved against the key's spending limit (zero without a limit).
    var keyReservation = Money.zero
    var startedAt: ContinuousClock.Instant
    var startedDate: Date
    /// The client's `Idempotency-Key`, claimed for this request.
    var idempotencyKey: String?
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
}

/// The request path after authentication: plan → hold → attempt (with failover) → settle.
///
/// Streams are written to an `emit` callback as the upstream produces them; non-streamed
/// requests are assembled from the same upstream stream. Every path ends with the hold posted
/// or voided: zero completion insurance means only a successful run is charged.
struct ChatPipeline: Sendable {
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
    let clock = ContinuousClock()
    /// Watchdogs and client-gone checks for every running request, on one timer; the interval
    /// is how late a timeout or a departed client may be noticed.
    let watch = PollingWatch(every: .milliseconds(50))
}
