/// Signalbox's billing rules, as pure functions.
public enum Billing {
    /// The platform fee on a credit purchase: 5.5% of the amount, at least $0.80, rounded up
    /// to the nano-dollar. Token costs carry no markup; this fee is the platform's only revenue.
    public static func purchaseFee(for amount: Money) -> Money {
        let percentage = (Int128(amount.nanos) * 55 + 999) / 1000
        return max(Money(nanos: Int64(percentage)), minimumPurchaseFee)
    }

    public static let minimumPurchaseFee = Money(nanos: 800_000_000)

    /// The system accounts every ledger has, with fixed ids.
    public enum SystemAccount {
        /// Platform fee revenue from credit purchases.
        public static let fees = "platform:fees"
        /// Cash in: the counter-account of every purchase.
        public static let purchases = "platform:purchases"
        /// Promotional credit given away.
        public static let grants = "platform:grants"
        /// What failed attempts cost the operator at providers (zero completion insurance).
        public static let insurance = "platform:insurance"
        /// What providers billed beyond a request's reservation (an upstream that counted more
        /// tokens than the router could foresee, or overshot `max_tokens`), and charges refused
        /// after an idempotency takeover: the operator's expense, never the client's.
        public static let overage = "platform:overage"
        /// Payables owed to a provider for the tokens it served.
        public static func provider(_ slug: String) -> String { "provider:\(slug)" }

        public static let all = [fees, purchases, grants, insurance, overage]

        /// System accounts may go negative (they are the other side of customer money);
        /// customer accounts never may.
        public static func isSystem(_ id: String) -> Bool { id.hasPrefix("platform:") || id.hasPrefix("provider:") }
    }
}

/// The free tier's request limits on `:free` models (OpenRouter's published numbers).
public enum FreeTier {
    public static let requestsPerMinute = 20
    /// Accounts that bought less than `creditThreshold` in total get `smallDailyLimit` requests a
    /// day; the others `largeDailyLimit`.
    public static let creditThreshold = Money(dollars: 10)
    public static let smallDailyLimit = 50
    public static let largeDailyLimit = 1000

    public static func dailyLimit(purchased: Money) -> Int {
        purchased >= creditThreshold ? largeDailyLimit : smallDailyLimit
    }
}

/// Free-tier request counts shared by a cluster as grow-only counters: each node counts the
/// requests it admitted per account in the current minute and UTC day and gossips its counts;
/// an account's total is its own count plus the latest count every other node reported for the
/// same window. Pure: the gateway does the gossiping.
public struct FreeTierCounters: Sendable, Hashable {
    /// One node's counts for one account.
    public struct Counts: Sendable, Hashable, Codable {
        public var minute: Int64
        public var inMinute: Int
        public var day: Int64
        public var inDay: Int

        public init(minute: Int64, inMinute: Int, day: Int64, inDay: Int) {
            self.minute = minute
            self.inMinute = inMinute
            self.day = day
            self.inDay = inDay
        }

        /// `minute:count:day:count`, the gossiped value.
        public var text: String { "\(minute):\(inMinute):\(day):\(inDay)" }

        public init?(text: String) {
            let parts = text.split(separator: ":").compactMap { Int64($0) }
            guard parts.count == 4 else { return nil }
            self.init(minute: parts[0], inMinute: Int(parts[1]), day: parts[2], inDay: Int(parts[3]))
        }
    }

    public private(set) var local: [String: Counts] = [:]
    /// By account, then node.
    public private(set) var remote: [String: [String: Counts]] = [:]

    public init() {}

    static func windows(_ unixSeconds: Double) -> (minute: Int64, day: Int64) {
        (Int64(unixSeconds / 60), Int64(unixSeconds / 86_400))
    }

    /// Requests admitted for the account in the current minute and day, cluster-wide as far as
    /// this node knows.
    public func used(account: String, now: Double) -> (minute: Int, day: Int) {
        let (minute, day) = Self.windows(now)
        var counts = (0, 0)
        for entry in [local[account]].compactMap({ $0 }) + (remote[account].map { Array($0.values) } ?? []) {
            if entry.minute == minute { counts.0 += entry.inMinute }
            if entry.day == day { counts.1 += entry.inDay }
        }
        return counts
    }

    /// Counts one admitted request; returns the node's new counts for the account (to gossip).
    public mutating func admit(account: String, now: Double) -> Counts {
        let (minute, day) = Self.windows(now)
        var counts = local[account] ?? Counts(minute: minute, inMinute: 0, day: day, inDay: 0)
        if counts.minute != minute { (counts.minute, counts.inMinute) = (minute, 0) }
        if counts.day != day { (counts.day, counts.inDay) = (day, 0) }
        counts.inMinute += 1
        counts.inDay += 1
        local[account] = counts
        return counts
    }

    /// Another node's counts for an account.
    public mutating func absorb(node: String, account: String, counts: Counts) {
        remote[account, default: [:]][node] = counts
    }

    /// This node's own counts as the cluster still holds them from its previous run (same node
    /// id): a restarted node resumes from the higher count instead of starting at zero.
    public mutating func resume(account: String, counts: Counts) {
        guard var mine = local[account] else {
            local[account] = counts
            return
        }
        if counts.minute > mine.minute {
            (mine.minute, mine.inMinute) = (counts.minute, counts.inMinute)
        } else if counts.minute == mine.minute {
            mine.inMinute = max(mine.inMinute, counts.inMinute)
        }
        if counts.day > mine.day {
            (mine.day, mine.inDay) = (counts.day, counts.inDay)
        } else if counts.day == mine.day {
            mine.inDay = max(mine.inDay, counts.inDay)
        }
        local[account] = mine
    }

    /// Forgets a node's counts for an account (the node was reaped from the cluster).
    public mutating func forget(node: String, account: String) {
        remote[account]?[node] = nil
        if remote[account]?.isEmpty == true { remote[account] = nil }
    }

    /// Forgets a node (dead or left): its counts stop counting only when their window ends, so
    /// they are kept; this is for nodes that will never report again and whose windows ended.
    public mutating func forgetEnded(now: Double) {
        let (_, day) = Self.windows(now)
        local = local.filter { $0.value.day == day }
        remote = remote.compactMapValues { nodes in
            let current = nodes.filter { $0.value.day == day }
            return current.isEmpty ? nil : current
        }
    }
}
