import Foundation
import SignalboxCore

/// A lease row's state: `pending` while open, `voided` once closed, returned or expired.
/// (`posted` marks the per-request holds of earlier versions that were charged.)
public enum HoldStatus: String, Sendable, Codable { case pending, posted, voided }

/// A node asking to grow its lease on an account's available credit.
public struct LeaseRequest: Sendable, Hashable {
    /// The lease's hold id; one per node and account at a time.
    public var id: String
    public var account: String
    /// Less than this is useless to the caller: grant nothing.
    public var minimum: Money
    /// What the caller would like; the grant is capped by `shareOfAvailable`.
    public var desired: Money
    /// The grant never takes more than this fraction (1/n) of the account's available credit
    /// beyond `minimum`, so several nodes can lease the same account as it runs low.
    public var shareDivisor: Int64
    /// The lease expires this long after the ledger grew it, by the ledger's clock: no node's
    /// clock decides when another node's lease ends.
    public var ttl: TimeInterval

    public init(id: String, account: String, minimum: Money, desired: Money, shareDivisor: Int64 = 4, ttl: TimeInterval) {
        self.id = id
        self.account = account
        self.minimum = minimum
        self.desired = desired
        self.shareDivisor = shareDivisor
        self.ttl = ttl
    }

    /// The grant for an account with `available` credit: nil when even `minimum` is not covered.
    /// Between `minimum` and `desired`, at most 1/`shareDivisor` of what is available.
    public func grant(available: Money) -> Money? {
        guard minimum >= .zero, available >= minimum else { return nil }
        let share = Money(nanos: available.nanos / max(1, shareDivisor))
        return min(available, max(minimum, min(desired, share)))
    }
}

/// The answer to a `LeaseRequest`.
public enum LeaseGrant: Sendable, Hashable {
    /// The lease grew by `added` and now reserves `total`.
    case granted(added: Money, total: Money)
    /// The account's available credit does not cover `minimum`.
    case insufficient(available: Money)
    /// The lease is no longer open (it expired and was voided): use a new lease id.
    case closed
}
