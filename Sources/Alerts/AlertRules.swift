import Foundation
import SignalboxCore

/// Turns what a node observes into alert events, once per crossing: a pure state machine (the
/// `AlertWatcher` feeds it; tests feed it directly).
///
/// - Thresholds (an account's balance, a key's spending limit) alert when a batch of new ledger
///   entries takes a value across them, and re-arm once the value is back on the safe side.
/// - States (members dead or left, endpoints routed around, the ledger out of reach, the spool's
///   age) alert on the transition, not while the state lasts.
public struct AlertRules: Sendable {
    public var balanceBelow: Money?
    public var spoolAge: TimeInterval
    /// Accounts reported low and not yet back above the threshold.
    private var lowAccounts: Set<String> = []
    /// Keys reported at 80% or 100% of their limit, in their current window.
    private var keyLevels: [String: Int] = [:]
    private var members: [String: MemberView] = [:]
    private var degraded: Set<String>?
    private var ledgerReachable = true
    private var spoolOverdue = false

    public init(balanceBelow: Money?, spoolAge: TimeInterval) {
        self.balanceBelow = balanceBelow
        self.spoolAge = spoolAge
    }

    // MARK: Thresholds over new ledger entries

    /// An account's balance now, and the new entries that moved it since the last look.
    public struct AccountChange: Sendable {
        public var account: String
        public var balance: Money
        /// The new entries, each as what it did to the balance (negative: spent) and whether it is a charge.
        public var movements: [Movement]
        public init(account: String, balance: Money, movements: [Movement]) {
            self.account = account
            self.balance = balance
            self.movements = movements
        }
    }

    public struct Movement: Sendable {
        public var entry: Int64
        public var amount: Money
        public var isCharge: Bool
        public init(entry: Int64, amount: Money, isCharge: Bool) {
            self.entry = entry
            self.amount = amount
            self.isCharge = isCharge
        }
    }

    /// An account is reported when one of the new charges took its balance from at or above the
    /// threshold to below it (walking back from the balance now); not again until a look sees the
    /// balance back at or above it.
    public mutating func accounts(_ changes: [AccountChange]) -> [AlertEvent] {
        guard let threshold = balanceBelow else { return [] }
        var events: [AlertEvent] = []
        for change in changes {
            if change.balance >= threshold {
                lowAccounts.remove(change.account)
                continue
            }
            guard !lowAccounts.contains(change.account) else { continue }
            var after = change.balance
            var crossing: Int64?
            for movement in change.movements.sorted(by: { $0.entry > $1.entry }) {
                let before = after - movement.amount
                if movement.isCharge && before >= threshold && after < threshold {
                    crossing = movement.entry
                    break
                }
                after = before
            }
            guard let crossing else { continue }
            lowAccounts.insert(change.account)
            events.append(
                AlertEvent(
                    id: "\(AlertEvent.Kind.balanceLow.rawValue):\(change.account):\(crossing)", kind: .balanceLow,
                    summary: "Account \(change.account)'s balance fell below $\(threshold.decimalString): $\(change.balance.decimalString)",
                    data: [
                        "account": .string(change.account), "balance": .string(change.balance.decimalString),
                        "threshold": .string(threshold.decimalString), "entry": .int(crossing),
                    ]))
        }
        return events
    }

    /// A limited key's spending in its current window now, and what the new entries added to it.
    public struct KeyChange: Sendable {
        public var keyID: String
        public var account: String
        public var limit: Money
        public var spent: Money
        public var added: Money
        public var lastEntry: Int64
        public init(keyID: String, account: String, limit: Money, spent: Money, added: Money, lastEntry: Int64) {
            self.keyID = keyID
            self.account = account
            self.limit = limit
            self.spent = spent
            self.added = added
            self.lastEntry = lastEntry
        }
    }

    public mutating func keys(_ changes: [KeyChange]) -> [AlertEvent] {
        var events: [AlertEvent] = []
        for change in changes where change.limit > .zero {
            let level = Self.level(change.spent, of: change.limit)
            let before = Self.level(change.spent - change.added, of: change.limit)
            let reported = keyLevels[change.keyID] ?? 0
            if level < reported { keyLevels[change.keyID] = level }  // a new window: re-armed
            for (mark, kind) in [(80, AlertEvent.Kind.keyLimit80), (100, .keyLimit100)]
            where level >= mark && before < mark && (keyLevels[change.keyID] ?? 0) < mark {
                keyLevels[change.keyID] = mark
                events.append(
                    AlertEvent(
                        id: "\(kind.rawValue):\(change.keyID):\(change.lastEntry)", kind: kind,
                        summary: "Key \(change.keyID) has spent \(mark)% of its $\(change.limit.decimalString) limit "
                            + "($\(change.spent.decimalString))",
                        data: [
                            "key_id": .string(change.keyID), "account": .string(change.account),
                            "limit": .string(change.limit.decimalString), "spent": .string(change.spent.decimalString),
                            "percent": .int(Int64(mark)), "entry": .int(change.lastEntry),
                        ]))
            }
        }
        return events
    }

    /// 0, 80 or 100: the highest mark `spent` reached.
    static func level(_ spent: Money, of limit: Money) -> Int {
        if spent >= limit { return 100 }
        // spent ≥ 80% of limit ⇔ 5·spent ≥ 4·limit, in exact money.
        return Int128(spent.nanos) * 5 >= Int128(limit.nanos) * 4 ? 80 : 0
    }

    // MARK: Cluster states

    public struct MemberView: Sendable, Hashable {
        public var id: String
        public var region: String
        public var state: String
        public var incarnation: UInt64
        public init(id: String, region: String, state: String, incarnation: UInt64) {
            self.id = id
            self.region = region
            self.state = state
            self.incarnation = incarnation
        }
    }

    /// Members that turned dead or left since the last look. A member first seen dead or left
    /// (a node that joins late learns of old deaths) is not news.
    public mutating func members(_ current: [MemberView]) -> [AlertEvent] {
        defer { members = Dictionary(current.map { ($0.id, $0) }, uniquingKeysWith: { $1 }) }
        var events: [AlertEvent] = []
        for member in current {
            guard let previous = members[member.id]?.state, previous != member.state else { continue }
            let kind: AlertEvent.Kind
            switch member.state {
            case "dead": kind = .nodeDead
            case "left": kind = .nodeLeft
            default: continue
            }
            events.append(
                AlertEvent(
                    id: "\(kind.rawValue):\(member.id):\(member.incarnation)", kind: kind,
                    summary: kind == .nodeDead
                        ? "Node \(member.id) (\(member.region)) stopped answering and was declared dead"
                        : "Node \(member.id) (\(member.region)) left the cluster",
                    data: [
                        "member": .string(member.id), "member_region": .string(member.region),
                        "incarnation": .int(Int64(clamping: member.incarnation)),
                    ]))
        }
        return events
    }

    /// Endpoints routed around (their circuit open) now; the first look only learns.
    public mutating func routedAround(_ current: Set<String>, at now: Date = Date()) -> [AlertEvent] {
        defer { degraded = current }
        guard let previous = degraded else { return [] }
        let stamp = Int64(now.timeIntervalSince1970 * 1000)
        let opened = current.subtracting(previous).sorted().map { endpoint in
            AlertEvent(
                id: "\(AlertEvent.Kind.circuitOpened.rawValue):\(endpoint):\(stamp)", kind: .circuitOpened,
                summary: "Provider endpoint \(endpoint) is failing; the cluster routes around it",
                data: ["endpoint": .string(endpoint)])
        }
        let closed = previous.subtracting(current).sorted().map { endpoint in
            AlertEvent(
                id: "\(AlertEvent.Kind.circuitClosed.rawValue):\(endpoint):\(stamp)", kind: .circuitClosed,
                summary: "Provider endpoint \(endpoint) is healthy again", data: ["endpoint": .string(endpoint)])
        }
        return opened + closed
    }

    /// This node's view of the ledger: reachable or not, and the age of its oldest spooled settlement.
    public mutating func ledger(reachable: Bool, oldestSpooled: TimeInterval?, node: String, at now: Date = Date()) -> [AlertEvent] {
        var events: [AlertEvent] = []
        let stamp = Int64(now.timeIntervalSince1970 * 1000)
        if !reachable && ledgerReachable {
            events.append(
                AlertEvent(
                    id: "\(AlertEvent.Kind.ledgerUnreachable.rawValue):\(node):\(stamp)", kind: .ledgerUnreachable,
                    summary: "Node \(node) cannot reach the credit ledger; it spools settlements and serves what its leases cover",
                    data: [:]))
        }
        ledgerReachable = reachable
        let overdue = (oldestSpooled ?? 0) > spoolAge
        if overdue && !spoolOverdue {
            events.append(
                AlertEvent(
                    id: "\(AlertEvent.Kind.spoolAge.rawValue):\(node):\(stamp)", kind: .spoolAge,
                    summary: "Node \(node)'s oldest spooled settlement is \(Int(oldestSpooled ?? 0)) s old (limit \(Int(spoolAge)) s)",
                    data: ["age_seconds": .int(Int64(oldestSpooled ?? 0)), "limit_seconds": .int(Int64(spoolAge))]))
        }
        spoolOverdue = overdue
        return events
    }
}
