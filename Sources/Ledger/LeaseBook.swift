import Foundation
import SignalboxCore

/// How a node sizes, keeps and gives back its leases.
public struct LeasePolicy: Sendable, Hashable {
    /// The smallest slice a node asks for when it grows a lease.
    public var slice: Money
    /// A growth asks for at least this many times the reservation that needed it.
    public var sliceMultiple: Int64
    /// A lease never takes more than 1/`shareDivisor` of an account's available credit beyond
    /// what the request at hand needs, so the other nodes can still lease the rest.
    public var shareDivisor: Int64
    /// How long a lease lives without renewal: a dead node's leases are voided after this.
    public var ttl: TimeInterval
    /// A lease with nothing reserved for this long is given back.
    public var idleRelease: TimeInterval

    public init(
        slice: Money = Money(nanos: 1_000_000_000), sliceMultiple: Int64 = 8, shareDivisor: Int64 = 4,
        ttl: TimeInterval = 15 * 60, idleRelease: TimeInterval = 10
    ) {
        self.slice = slice
        self.sliceMultiple = sliceMultiple
        self.shareDivisor = shareDivisor
        self.ttl = ttl
        self.idleRelease = idleRelease
    }
}

/// Credit a request holds until it settles: part of one of this node's leases.
public struct CreditReservation: Sendable, Hashable {
    public var account: String
    public var leaseID: String
    public var amount: Money
}

/// A node's own bookkeeping of its leases, one per account: what the ledger granted and what
/// in-flight requests reserved of it. Pure: the `CreditLeases` actor does the I/O it asks for.
///
/// `granted` runs ahead of the ledger by the releases of settlements not yet committed: it only
/// ever shrinks early, so the node never uses credit the ledger does not hold for it.
public struct LeaseBook: Sendable {
    public struct Lease: Sendable, Hashable {
        public var id: String
        public var account: String
        public var granted: Money
        public var reserved: Money
        public var expiresAt: Date
        public var lastUsed: Date
        /// The last growth got less than asked for: the account is running low, so each
        /// settlement gives back the unused part: the lease holds only what requests in flight need.
        public var tight: Bool
        /// Settlements on this lease handed to the committer and not yet committed: the lease is
        /// not given back while any are, since closing it releases what they will charge.
        public var unsettled = 0
        /// What those settlements release: the ledger's lease is larger than `granted` by this
        /// until they are committed.
        public var unsettledRelease = Money.zero
        /// A growth timed out: the ledger may have granted it after all. The next renewal reads
        /// the ledger's amount and takes back what landed (`reconcile`).
        public var uncertain = false
        /// Bumped whenever the ledger's amount and the book move apart for a moment (a commit, a
        /// growth): a ledger amount read across a bump cannot be reconciled.
        public var revision = 0

        public var free: Money { granted - reserved }
    }

    /// Work the shell has to do to keep the leases alive or give them back.
    public enum Upkeep: Sendable, Hashable {
        case renew(leaseID: String, account: String, expiresAt: Date)
        case close(leaseID: String, account: String)
    }

    public let nodeID: String
    public let policy: LeasePolicy
    public private(set) var leases: [String: Lease] = [:]
    private var sequence = 0

    public init(nodeID: String, policy: LeasePolicy) {
        self.nodeID = nodeID
        self.policy = policy
    }

    /// Takes `amount` from the account's lease if it has that much free.
    public mutating func reserve(account: String, amount: Money, now: Date) -> CreditReservation? {
        // A lease is not used in the last tenth of its life: the ledger may void it by then.
        guard var lease = leases[account], lease.free >= amount,
            lease.expiresAt.addingTimeInterval(-policy.ttl / 10) > now
        else { return nil }
        lease.reserved += amount
        lease.lastUsed = now
        leases[account] = lease
        return CreditReservation(account: account, leaseID: lease.id, amount: amount)
    }

    /// What to ask the ledger for so that `amount` can be reserved: the shortfall at least, a
    /// slice if the account can spare it.
    public mutating func growthRequest(account: String, amount: Money, now: Date) -> LeaseRequest {
        let lease = leases[account] ?? newLease(account: account, now: now)
        leases[account] = lease
        let shortfall = max(.zero, amount - max(.zero, lease.free))
        let desired = max(policy.slice, Money(nanos: amount.nanos.multipliedReportingOverflow(by: policy.sliceMultiple).partialValue))
        return LeaseRequest(
            id: lease.id, account: account, minimum: shortfall, desired: max(shortfall, desired),
            shareDivisor: policy.shareDivisor, ttl: policy.ttl)
    }

    /// Records the ledger's answer to `request`, asked at `requestedAt` by this node's clock. A
    /// closed lease is dropped (the next growth opens a new one). The ledger dates the expiry by
    /// its own clock when it receives the request, so counting the TTL from `requestedAt` here
    /// ends the lease's use before the ledger ends the lease, whatever the offset between clocks.
    public mutating func apply(_ grant: LeaseGrant, to request: LeaseRequest, requestedAt: Date) {
        guard var lease = leases[request.account], lease.id == request.id else { return }
        switch grant {
        case .granted(let added, _):
            lease.granted += added
            lease.revision += 1
            lease.expiresAt = requestedAt.addingTimeInterval(request.ttl)
            lease.tight = added < request.desired
            leases[request.account] = lease
        case .insufficient:
            lease.tight = true
            leases[request.account] = lease
        case .closed:
            leases[request.account] = nil
        }
    }

    /// Ends a reservation whose request was charged `charged` (zero for a failure): returns how
    /// the settlement releases the lease. The charge comes out of the lease; when the lease is
    /// tight, the unused rest of it goes back too.
    public mutating func settle(_ reservation: CreditReservation, charged: Money, now: Date) -> Reservation {
        guard var lease = leases[reservation.account], lease.id == reservation.leaseID else {
            // The lease was closed (expired) meanwhile: the ledger releases nothing more for it.
            return .lease(id: reservation.leaseID, release: charged)
        }
        lease.reserved -= reservation.amount
        var release = min(max(.zero, charged), lease.granted)
        if lease.tight { release = max(release, lease.granted - lease.reserved) }
        lease.granted -= release
        lease.lastUsed = now
        lease.unsettled += 1
        lease.unsettledRelease += release
        leases[reservation.account] = lease
        return .lease(id: lease.id, release: release)
    }

    /// A settlement on the lease, releasing `release`, reached the ledger (or the spool).
    public mutating func committed(_ reservation: CreditReservation, release: Money) {
        guard var lease = leases[reservation.account], lease.id == reservation.leaseID else { return }
        lease.unsettled = max(0, lease.unsettled - 1)
        lease.unsettledRelease = max(.zero, lease.unsettledRelease - release)
        lease.revision += 1
        leases[reservation.account] = lease
    }

    /// A growth of the account's lease failed without an answer (a deadline): it may still land.
    public mutating func growthUncertain(account: String, leaseID: String) {
        guard leases[account]?.id == leaseID else { return }
        leases[account]?.uncertain = true
    }

    /// The ledger says the lease reserves `amount`. For a lease whose growth timed out, what the
    /// ledger holds beyond the book (and the releases on their way) is a growth that landed
    /// late: the node takes it into the book instead of leaking it until the lease closes.
    /// Call only when nothing waits in the spool or in memory and no growth is in flight;
    /// `revision` is the lease's revision from before the ledger was read.
    public mutating func reconcile(leaseID: String, account: String, ledgerAmount: Money, revision: Int) {
        guard var lease = leases[account], lease.id == leaseID, lease.uncertain, lease.revision == revision else { return }
        let landed = ledgerAmount - lease.unsettledRelease - lease.granted
        if landed > .zero { lease.granted += landed }
        lease.uncertain = false
        leases[account] = lease
    }

    /// Ends a reservation that will not be settled (its request was answered from an earlier
    /// one); its credit stays in the lease.
    public mutating func cancel(_ reservation: CreditReservation) {
        guard var lease = leases[reservation.account], lease.id == reservation.leaseID else { return }
        lease.reserved -= reservation.amount
        leases[reservation.account] = lease
    }

    /// Leases to renew (half their lifetime gone and still in use) and to give back (idle, or
    /// all of them when `closingAll`). Closed leases leave the book at once, so new requests
    /// open new ones.
    ///
    /// `mayClose` is false while settlements wait in the spool: closing a lease releases its whole
    /// amount in the ledger, including what those settlements will charge once replayed. For the
    /// same reason a lease with settlements on their way to the ledger (`unsettled`) stays open;
    /// nothing here waits for the committer, so upkeep runs whatever the load.
    public mutating func upkeep(now: Date, closingAll: Bool = false, mayClose: Bool = true) -> [Upkeep] {
        var work: [Upkeep] = []
        for (account, lease) in leases.sorted(by: { $0.key < $1.key }) {
            if mayClose && lease.reserved == .zero && lease.unsettled == 0
                && (closingAll || now.timeIntervalSince(lease.lastUsed) >= policy.idleRelease)
            {
                leases[account] = nil
                work.append(.close(leaseID: lease.id, account: account))
            } else if lease.uncertain || lease.expiresAt.timeIntervalSince(now) < policy.ttl / 2 {
                work.append(.renew(leaseID: lease.id, account: account, expiresAt: now.addingTimeInterval(policy.ttl)))
            }
        }
        return work
    }

    /// The ledger moved a lease's expiry.
    public mutating func renewed(leaseID: String, account: String, expiresAt: Date) {
        guard leases[account]?.id == leaseID else { return }
        leases[account]?.expiresAt = expiresAt
    }

    /// Drops a lease the ledger has already closed (it expired there): the node forgets it and
    /// leases afresh.
    public mutating func drop(leaseID: String, account: String) {
        if leases[account]?.id == leaseID { leases[account] = nil }
    }

    /// What the node can still spend for an account without asking the ledger.
    public func free(account: String) -> Money { leases[account].map { max(.zero, $0.free) } ?? .zero }

    private mutating func newLease(account: String, now: Date) -> Lease {
        sequence += 1
        let id = "lease:\(nodeID):\(account):\(Int(now.timeIntervalSince1970 * 1000)):\(sequence)"
        return Lease(
            id: id, account: account, granted: .zero, reserved: .zero,
            expiresAt: now.addingTimeInterval(policy.ttl), lastUsed: now, tight: false)
    }
}
