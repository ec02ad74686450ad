/// A circuit breaker for one endpoint, as a pure state machine: outcomes and the time go in,
/// the state comes out.
///
/// Closed: requests flow; `failureThreshold` consecutive failures open it. Open: the endpoint is
/// moved last (never dropped) until `cooldown` passes, then one request may probe it (half-open).
/// A successful probe closes it; a failed one opens it again.
public struct CircuitBreaker: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Hashable, Codable {
        case closed, open
        case halfOpen = "half_open"
    }

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
        if rateLimited {
            buckets[index].rateLimited += 1
        } else {
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

    /// Until when (caller's clock) another node's fresh report says it routes around this endpoint.
    public var routedAroundElsewhereUntil: Double?

    /// An outage the planner should route around: an open circuit, a failure in the last
    /// `recentOutageSeconds` (OpenRouter's 30 s), or another node routing around it now.
    public func isDegraded(at now: Double, recentOutageSeconds: Double = 30) -> Bool {
        if breaker.state(at: now) == .open { return true }
        if let lastFailureAt, now - lastFailureAt < recentOutageSeconds { return true }
        if let until = routedAroundElsewhereUntil, now < until { return true }
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
/// over the 25 before, and whether it is routing around the endpoint now. No timestamps: a
/// report is dated by its receiver (see `NodeHealthReport`).
public struct EndpointHealthSummary: Sendable, Hashable {
    /// The last 5 minutes (`start` unused).
    public var recent = EndpointHealth.Bucket(start: 0)
    /// From 30 to 5 minutes ago.
    public var earlier = EndpointHealth.Bucket(start: 0)
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
        summary.degraded = isDegraded(at: now)
        return summary
    }

    /// Folds in another node's report, dated `reportedAt` on this node's clock and valid until
    /// `validUntil`: its counts join the uptime and latency windows, and an endpoint it routes
    /// around is routed around here until the report lapses or a newer one says otherwise.
    public mutating func absorb(_ summary: EndpointHealthSummary, validUntil: Double, now: Double) {
        for (counts, start) in [(summary.recent, now - Self.bucketSeconds), (summary.earlier, now - 900)] {
            var bucket = counts
            bucket.start = start
            buckets.append(bucket)
        }
        if summary.degraded { routedAroundElsewhereUntil = max(routedAroundElsewhereUntil ?? validUntil, validUntil) }
    }

    /// This node's own observations with the other nodes' aggregate (`absorb`ed) folded in.
    public func merged(with remote: EndpointHealth?) -> EndpointHealth {
        guard let remote else { return self }
        var merged = self
        merged.buckets += remote.buckets
        merged.routedAroundElsewhereUntil = remote.routedAroundElsewhereUntil
        return merged
    }
}

/// A node's report of every endpoint it has seen lately (`health/<node>` in the gossiped state).
///
/// On the wire it is compact text, one line per endpoint (`model|tag`, degraded 0/1, then the
/// seven counts of the last 5 minutes and of the 25 before, `-` for all zero): a node that has
/// served all 155 endpoints of the catalog reports in about 10 KB. It carries no clock reading;
/// the receiver dates it by the age gossip carries with it (`at`, on the receiver's clock).
public struct NodeHealthReport: Sendable, Hashable {
    /// When it was made, in Unix seconds on the holder's clock.
    public var at: Double
    /// By `HealthView.key(model:tag:)`.
    public var endpoints: [String: EndpointHealthSummary]

    public init(at: Double, endpoints: [String: EndpointHealthSummary]) {
        self.at = at
        self.endpoints = endpoints
    }

    /// Keys of the endpoints the node routes around.
    public var degradedKeys: Set<String> { Set(endpoints.filter { $0.value.degraded }.keys) }

    /// The gossiped value (without `at`).
    public var text: String {
        var lines = ["h1"]
        for (key, summary) in endpoints.sorted(by: { $0.key < $1.key }) {
            lines.append("\(key) \(summary.degraded ? 1 : 0) \(Self.encode(summary.recent)) \(Self.encode(summary.earlier))")
        }
        return lines.joined(separator: "\n")
    }

    /// Parses a gossiped value, dating it `at`; nil when it is not a report.
    public init?(text: String, at: Double) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first == "h1" else { return nil }
        lines.removeFirst()
        var endpoints: [String: EndpointHealthSummary] = [:]
        for line in lines {
            let fields = line.split(separator: " ")
            guard fields.count == 4, let recent = Self.decode(fields[2]), let earlier = Self.decode(fields[3]) else { return nil }
            var summary = EndpointHealthSummary()
            summary.degraded = fields[1] == "1"
            summary.recent = recent
            summary.earlier = earlier
            endpoints[String(fields[0])] = summary
        }
        self.init(at: at, endpoints: endpoints)
    }

    private static func encode(_ bucket: EndpointHealth.Bucket) -> String {
        let values = [
            bucket.successes, bucket.failures, bucket.rateLimited, bucket.firstTokenMillis, bucket.firstTokenSamples,
            bucket.throughputMilli, bucket.throughputSamples,
        ]
        return values.allSatisfy { $0 == 0 } ? "-" : values.map(String.init).joined(separator: ",")
    }

    private static func decode(_ field: Substring) -> EndpointHealth.Bucket? {
        var bucket = EndpointHealth.Bucket(start: 0)
        if field == "-" { return bucket }
        let values = field.split(separator: ",").compactMap { Int($0) }
        guard values.count == 7, values.allSatisfy({ $0 >= 0 }) else { return nil }
        (bucket.successes, bucket.failures, bucket.rateLimited, bucket.firstTokenMillis) = (values[0], values[1], values[2], values[3])
        (bucket.firstTokenSamples, bucket.throughputMilli, bucket.throughputSamples) = (values[4], values[5], values[6])
        return bucket
    }
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

    /// Other nodes' reports summed per endpoint: only reports younger than `lifetime` count,
    /// and each routes around what it marks degraded until it lapses.
    public static func aggregate(_ reports: some Sequence<NodeHealthReport>, lifetime: Double, now: Double) -> [String: EndpointHealth] {
        var aggregate: [String: EndpointHealth] = [:]
        for report in reports where now - report.at < lifetime {
            for (key, summary) in report.endpoints {
                aggregate[key, default: EndpointHealth()].absorb(summary, validUntil: report.at + lifetime, now: now)
            }
        }
        return aggregate
    }

    /// This view with another nodes' aggregate folded in (see `EndpointHealth.merged`).
    public func merging(_ aggregate: [String: EndpointHealth]) -> HealthView {
        var merged = self
        for (key, remote) in aggregate {
            merged.endpoints[key] = (endpoints[key] ?? EndpointHealth()).merged(with: remote)
        }
        return merged
    }
}
