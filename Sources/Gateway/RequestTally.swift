import Foundation

/// Model requests by minute over the last week on this node: how many, how many failed (a 5xx or
/// a 429 to the client), how many failed over, and time to first token. A ring of one bucket per
/// minute, so it never grows; the console reads it for its charts.
public struct RequestTally: Sendable {
    public struct Bucket: Sendable, Hashable {
        /// Minutes since 1970 this bucket counts; a bucket whose minute is past the ring's length is stale.
        public var minute: Int64 = -1
        public var requests = 0
        public var failed = 0
        public var failovers = 0
        public var firstTokenMillis: Int64 = 0
        public var firstTokens = 0

        mutating func add(_ other: Bucket) {
            requests += other.requests
            failed += other.failed
            failovers += other.failovers
            firstTokenMillis += other.firstTokenMillis
            firstTokens += other.firstTokens
        }

        /// Mean time to first token, in milliseconds.
        public var meanFirstTokenMillis: Int? { firstTokens > 0 ? Int(firstTokenMillis / Int64(firstTokens)) : nil }
    }

    /// The routes whose responses count (what clients call models with).
    public static let countedRoutes: Set<String> = [
        "/api/v1/chat/completions", "/api/v1/completions", "/api/v1/embeddings", "/api/v1/responses", "/api/v1/messages",
    ]

    public static let minutes = 7 * 24 * 60
    private var ring = [Bucket](repeating: Bucket(), count: RequestTally.minutes)
    let clock: @Sendable () -> Date

    public init(clock: @escaping @Sendable () -> Date = Date.init) { self.clock = clock }

    private mutating func withBucket(_ body: (inout Bucket) -> Void) {
        let minute = Int64(clock().timeIntervalSince1970 / 60)
        let index = Int(minute % Int64(Self.minutes))
        if ring[index].minute != minute { ring[index] = Bucket(minute: minute) }
        body(&ring[index])
    }

    public mutating func request(failed: Bool) {
        withBucket {
            $0.requests += 1
            if failed { $0.failed += 1 }
        }
    }

    public mutating func failover() { withBucket { $0.failovers += 1 } }

    public mutating func firstToken(milliseconds: Int64) {
        withBucket {
            $0.firstTokenMillis += milliseconds
            $0.firstTokens += 1
        }
    }

    /// `count` buckets of `width` minutes each, ending with the current minute, oldest first.
    public func series(count: Int, width: Int) -> [Bucket] {
        let now = Int64(clock().timeIntervalSince1970 / 60)
        let span = min(count * width, Self.minutes)
        var series = [Bucket](repeating: Bucket(), count: count)
        for back in 0..<span {
            let minute = now - Int64(back)
            let bucket = ring[Int(minute % Int64(Self.minutes))]
            guard bucket.minute == minute else { continue }
            let slot = count - 1 - back / width
            if slot >= 0 { series[slot].add(bucket) }
        }
        for index in series.indices { series[index].minute = now - Int64((count - 1 - index) * width) }
        return series
    }

    /// Everything in the last `minutes`.
    public func total(minutes: Int) -> Bucket {
        var total = Bucket()
        for bucket in series(count: 1, width: minutes) { total.add(bucket) }
        return total
    }
}
