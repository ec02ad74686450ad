/// A circuit breaker for one endpoint, as a pure state machine: outcomes and the time go in,
/// the state comes out.
///
/// Closed: requests flow; `failureThreshold` consecutive failures open it. Open: the endpoint is
/// moved last (never dropped) until `cooldown` passes, then one request may probe it (half-open).
/// A successful probe closes it; a failed one opens it again.
public struct CircuitBreaker: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Hashable, Codable { case closed, open, halfOpen = "half_open" }

    public private(set) var state: State = .closed
    public private(set) var consecutiveFailures = 0
    /// When the circuit last opened, in seconds on the caller's clock.
    public private(set) var openedAt: Double?
    public var failureThreshold: Int
    public var cooldown: Double

    public init(failureThreshold: Int = 5, cooldown: Double = 30) {
        self.failureThreshold = failureThreshold
        self.cooldown = cooldown
    }

    /// The state at `now`: an open circuit whose cooldown has passed is half-open.
    public func state(at now: Double) -> State {
        if state == .open, let openedAt, now - openedAt >= cooldown { return .halfOpen }
        return state
    }

    public mutating func recordSuccess() {
        state = .closed
        consecutiveFailures = 0
        openedAt = nil
    }

    public mutating func recordFailure(at now: Double) {
        consecutiveFailures += 1
        switch state(at: now) {
        case .halfOpen:
            state = .open
            openedAt = now
        case .closed where consecutiveFailures >= failureThreshold:
            state = .open
            openedAt = now
        default:
            break
        }
    }
}

/// What one node has seen of one endpoint recently: outcomes in a sliding window, latency and
/// throughput, and its circuit breaker. A value, so it can be copied into snapshots and merged.
public struct EndpointHealth: Sendable, Hashable, Codable {
    /// One bucket of outcomes, per `bucketSeconds` of wall time.
    public struct Bucket: Sendable, Hashable, Codable {
        /// Adds another bucket's counts to this one's (its start is kept).
        mutating func add(_ other: Bucket) {
            successes += other.successes
            failures += other.failures
            rateLimited += other.rateLimited
            firstTokenMillis += other.firstTokenMillis
            firstTokenSamples += other.firstTokenSamples
            throughputMilli += other.throughputMilli
            throughputSamples += other.throughputSamples
        }

        public var start: Double
        public var successes = 0
        public var failures = 0
        /// Rate-limited attempts: they count for the breaker's patience, not against uptime.
        public var rateLimited = 0
        /// Sum of time-to-first-token, milliseconds, over successes that reported it.
        public var firstTokenMillis = 0
        public var firstTokenSamples = 0
        /// Sum of output tokens per second × 1000 over successes that reported it.
        public var throughputMilli = 0
        public var throughputSamples = 0
    }

    public static let bucketSeconds = 60.0
    /// Buckets kept: 30 minutes, the window `/endpoints` reports.
    public static let bucketCount = 30

    public var buckets: [Bucket] = []
    public var breaker: CircuitBreaker
    /// When the endpoint last failed (not counting rate limits), on the caller's clock.
    public var lastFailureAt: Double?

    public init(breaker: CircuitBreaker = CircuitBreaker()) { self.breaker = breaker }

    mutating func bucket(at now: Double) -> Int {
        let start = (now / Self.bucketSeconds).rounded(.down) * Self.bucketSeconds
        buckets.removeAll { $0.start <= start - Double(Self.bucketCount) * Self.bucketSeconds }
        if let index = buckets.firstIndex(where: { $0.start == start }) { return index }
        buckets.append(Bucket(start: start))
        return buckets.count - 1
    }

    public mutating func recordSuccess(at now: Double, firstTokenMillis: Int?, tokensPerSecond: Double?) {
        let index = bucket(at: now)
        buckets[index].successes += 1
        if let firstTokenMillis {
            buckets[index].firstTokenMillis += firstTokenMillis
            buckets[index].firstTokenSamples += 1
        }
        if let tokensPerSecond, tokensPerSecond.isFinite {
            buckets[index].throughputMilli += Int(tokensPerSecond * 1000)
            buckets[index].throughputSamples += 1
        }
        breaker.recordSuccess()
    }

    public mutating func recordFailure(at now: Double, rateLimited: Bool) {
        let index = bucket(at: now)
        if rateLimited { buckets[index].rateLimited += 1 } else {
            buckets[index].failures += 1
            lastFailureAt = now
        }
        breaker.recordFailure(at: now)
    }

    func window(_ seconds: Double, now: Double) -> [Bucket] {
        buckets.filter { $0.start > now - seconds - Self.bucketSeconds }
    }

    /// Successes / (successes + failures) × 100 over the last `seconds`, rate limits excluded;
    /// nil without data.
    public func uptime(lastSeconds seconds: Double, now: Double) -> Double? {
        let recent = window(seconds, now: now)
        let successes = recent.reduce(0) { $0 + $1.successes }
        let failures = recent.reduce(0) { $0 + $1.failures }
        guard successes + failures > 0 else { return nil }
        return Double(successes) * 100 / Double(successes + failures)
    }

    /// Mean time to first token over the last `seconds`, milliseconds.
    public func meanFirstTokenMillis(lastSeconds seconds: Double, now: Double) -> Double? {
        let recent = window(seconds, now: now)
        let samples = recent.reduce(0) { $0 + $1.firstTokenSamples }
        guard samples > 0 else { return nil }
        return Double(recent.reduce(0) { $0 + $1.firstTokenMillis }) / Double(samples)
    }

    /// Mean output tokens per second over the last `seconds`.
    public func meanThroughput(lastSeconds seconds: Double, now: Double) -> Double? {
        let recent = window(seconds, now: now)
        let samples = recent.reduce(0) { $0 + $1.throughputSamples }
        guard samples > 0 else { return nil }
        return Double(recent.reduce(0) { $0 + $1.throughputMilli }) / 1000 / Double(samples)
    }

    /// An outage the planner should route around: an open circuit, or a failure in the last
    /// `recentOutageSeconds` (OpenRouter's 30 s).
    public func isDegraded(at now: Double, recentOutageSeconds: Double = 30) -> Bool {
        if breaker.state(at: now) == .open { return true }
        if let lastFailureAt, now - lastFailureAt < recentOutageSeconds { return true }
        return false
    }
}

/// The health of every endpoint this node knows about, keyed by `HealthView.key(model:tag:)`.
public struct HealthView: Sendable, Hashable, Codable {
    public var endpoints: [String: EndpointHealth] = [:]

    public init() {}

    public static func key(model: String, tag: String) -> String { model + "|" + tag }

    public func health(model: String, tag: String) -> EndpointHealth? { endpoints[Self.key(model: model, tag: tag)] }

    public mutating func update(model: String, tag: String, _ change: (inout EndpointHealth) -> Void) {
        change(&endpoints[Self.key(model: model, tag: tag), default: EndpointHealth()])
    }
}

/// One endpoint's health as a node reports it to the cluster: counts over the last 5 minutes and
/// over the 25 before, and whether it is routing around the endpoint now. Small enough that a
/// node's whole report fits a datagram.
public struct EndpointHealthSummary: Sendable, Hashable, Codable {
    /// The last 5 minutes (`start` unused).
    public var recent = EndpointHealth.Bucket(start: 0)
    /// From 30 to 5 minutes ago.
    public var earlier = EndpointHealth.Bucket(start: 0)
    public var lastFailureAt: Double?
    /// The reporting node routes around this endpoint (open circuit or a failure in the last 30 s).
    public var degraded = false

    public init() {}
}

extension EndpointHealth {
    /// This node's view of the endpoint, for the cluster.
    public func summary(now: Double) -> EndpointHealthSummary {
        var summary = EndpointHealthSummary()
        for bucket in window(1800, now: now) {
            if bucket.start > now - 300 - Self.bucketSeconds { summary.recent.add(bucket) } else { summary.earlier.add(bucket) }
        }
        summary.lastFailureAt = lastFailureAt
        summary.degraded = isDegraded(at: now)
        return summary
    }

    /// Folds in another node's report, made at `reportedAt`: its counts join the uptime and
    /// latency windows, and an endpoint it routes around is routed around here too, for as long
    /// as a local failure would be (its report is refreshed while that lasts).
    public mutating func absorb(_ summary: EndpointHealthSummary, reportedAt: Double, now: Double) {
        for (counts, start) in [(summary.recent, now - Self.bucketSeconds), (summary.earlier, now - 900)] {
            var bucket = counts
            bucket.start = start
            buckets.append(bucket)
        }
        let failure = summary.degraded ? max(reportedAt, summary.lastFailureAt ?? reportedAt) : summary.lastFailureAt
        if let failure { lastFailureAt = max(lastFailureAt ?? failure, failure) }
    }
}

/// A node's report of every endpoint it has seen lately (`health/<node>` in the gossiped state).
public struct NodeHealthReport: Sendable, Hashable, Codable {
    /// Unix seconds when it was made.
    public var at: Double
    /// By `HealthView.key(model:tag:)`.
    public var endpoints: [String: EndpointHealthSummary]

    public init(at: Double, endpoints: [String: EndpointHealthSummary]) {
        self.at = at
        self.endpoints = endpoints
    }

    /// Keys of the endpoints the node routes around.
    public var degradedKeys: Set<String> { Set(endpoints.filter { $0.value.degraded }.keys) }
}

extension HealthView {
    /// This node's report: every endpoint with data in the last 30 minutes.
    public func report(now: Double) -> NodeHealthReport {
        var endpoints: [String: EndpointHealthSummary] = [:]
        for (key, health) in self.endpoints {
            let summary = health.summary(now: now)
            let empty = EndpointHealth.Bucket(start: 0)
            if summary.recent != empty || summary.earlier != empty || summary.degraded { endpoints[key] = summary }
        }
        return NodeHealthReport(at: now, endpoints: endpoints)
    }

    /// This view with other nodes' reports folded in (see `EndpointHealth.absorb`).
    public func merging(_ reports: some Sequence<NodeHealthReport>, now: Double) -> HealthView {
        var merged = self
        for report in reports {
            for (key, summary) in report.endpoints {
                merged.endpoints[key, default: EndpointHealth()].absorb(summary, reportedAt: report.at, now: now)
            }
        }
        return merged
    }
}
