import Foundation
import Logging
import SignalboxCore

/// A node's credit reservations: requests reserve from the node's lease on their account and
/// only go to the ledger when the lease runs short, so the hot path usually makes no ledger
/// round trip before the upstream call. See `LeaseBook` for the rules; this actor does the I/O.
public actor CreditLeases {
    /// The result of `reserve`.
    public enum ReserveOutcome: Sendable, Hashable {
        case reserved(CreditReservation)
        /// The account cannot cover the amount: what this node could still reserve for it.
        case insufficient(available: Money)
    }

    let store: any SettlementStore
    public nonisolated let committer: SettlementCommitter
    let timeout: Duration
    let logger: Logger
    private var book: LeaseBook
    private var growing: [String: Task<LeaseGrant, any Error>] = [:]
    /// Whether an upkeep is running, and the callers waiting for it to end.
    private var upkeepRunning = false
    private var upkeepWaiters: [CheckedContinuation<Void, Never>] = []

    public init(
        store: any SettlementStore, committer: SettlementCommitter, nodeID: String, policy: LeasePolicy = LeasePolicy(),
        timeout: Duration = .seconds(3), logger: Logger
    ) {
        self.store = store
        self.committer = committer
        self.book = LeaseBook(nodeID: nodeID, policy: policy)
        self.timeout = timeout
        self.logger = logger
    }

    public var leases: [LeaseBook.Lease] { Array(book.leases.values) }

    /// When this node's book started: leases with this node's id created earlier are its
    /// previous run's.
    let startedAt = Date()
    private var leftoversReturned = false

    /// Gives back the leases this node's previous run left, once its spool is replayed (the
    /// spooled settlements release their part of those leases first). True once done.
    @discardableResult
    public func returnLeftoverLeases() async -> Bool {
        guard !leftoversReturned else { return true }
        let status = await committer.currentStatus
        guard status.ledgerReachable, status.spooled == 0, status.held == 0 else { return false }
        let (store, nodeID, startedAt) = (self.store, book.nodeID, self.startedAt)
        do {
            let count = try await withLedgerDeadline(timeout, "returning leftover leases") {
                try await store.returnLeftoverLeases(nodeID: nodeID, createdBefore: startedAt)
            }
            if count > 0 { logger.notice("gave back the leases of this node's previous run", metadata: ["count": "\(count)"]) }
            leftoversReturned = true
            return true
        } catch {
            return false
        }
    }

    /// Reserves `amount` of the account's credit. Throws `LedgerError.unreachable` when the lease
    /// is short and the ledger cannot be asked: the node cannot prove the account can pay.
    public func reserve(account: String, amount: Money) async throws -> ReserveOutcome {
        // Leases the ledger found closed while settling are not used again.
        for (leaseID, leaseAccount) in committer.takeClosedReservations() { book.drop(leaseID: leaseID, account: leaseAccount) }
        while true {
            if let reservation = book.reserve(account: account, amount: amount, now: Date()) { return .reserved(reservation) }
            // During a known outage the node cannot prove more than its leases hold.
            guard committer.reachability.isReachable else { throw LedgerError.unreachable("outage in progress") }
            // One growth per account at a time; everyone short waits for it, then tries again.
            let growth = growing[account] ?? startGrowth(account: account, amount: amount)
            if case .insufficient(let available) = try await growth.value {
                if let reservation = book.reserve(account: account, amount: amount, now: Date()) { return .reserved(reservation) }
                return .insufficient(available: available + book.free(account: account))
            }
        }
    }

    /// Asks the ledger to grow the account's lease; the answer is applied to the book on this
    /// actor before the task completes, so whoever awaits it sees the new lease.
    private func startGrowth(account: String, amount: Money) -> Task<LeaseGrant, any Error> {
        let requestedAt = Date()
        let request = book.growthRequest(account: account, amount: amount, now: requestedAt)
        let (store, timeout) = (self.store, self.timeout)
        let growth = Task {
            do {
                let grant = try await withLedgerDeadline(timeout, "a lease") { try await store.growLease(request) }
                self.finishGrowth(request, grant, requestedAt: requestedAt)
                return grant
            } catch {
                self.finishGrowth(request, nil, requestedAt: requestedAt)
                if case LedgerError.unreachable? = error as? LedgerError { self.growthUncertain(request) }
                if !((error as? LedgerError)?.isRefusal ?? false) { await self.committer.noticeOutage() }
                throw error
            }
        }
        growing[account] = growth
        return growth
    }

    private func growthUncertain(_ request: LeaseRequest) {
        book.growthUncertain(account: request.account, leaseID: request.id)
    }

    private func finishGrowth(_ request: LeaseRequest, _ grant: LeaseGrant?, requestedAt: Date) {
        growing[request.account] = nil
        if let grant { book.apply(grant, to: request, requestedAt: requestedAt) }
    }

    /// Ends a reservation and hands its settlement to the committer; returns once the settlement
    /// is durable (committed, or spooled when the ledger is down).
    @discardableResult
    public func settle(
        _ reservation: CreditReservation?, charged: Money, transfers: [TransferRequest],
        generation: GenerationRecord, idempotency: IdempotencyOutcome?
    ) async -> SettlementCommitter.Receipt {
        let release = reservation.map { book.settle($0, charged: charged, now: Date()) }
        let receipt = await committer.submit(
            Settlement(
                reservation: release, transfers: transfers, generation: generation,
                idempotency: idempotency))
        if let reservation, case .lease(_, let released)? = release { book.committed(reservation, release: released) }
        return receipt
    }

    /// Ends a reservation whose request will not run.
    public func cancel(_ reservation: CreditReservation) { book.cancel(reservation) }

    /// Renews leases in use and gives idle ones back (all of them when `closingAll`, at
    /// shutdown). A lease with settlements on their way to the ledger, or any while settlements
    /// wait in the spool, is not given back, so a closed lease's charges are in the ledger before
    /// its credit is released. It never waits for the committer: under sustained load renewals
    /// and idle returns still happen.
    /// One upkeep runs at a time: a caller that asks for every lease closed returns only once
    /// the leases an upkeep already in progress was closing are closed too.
    public func upkeep(closingAll: Bool = false) async {
        while upkeepRunning { await withCheckedContinuation { upkeepWaiters.append($0) } }
        upkeepRunning = true
        defer {
            upkeepRunning = false
            let waiters = upkeepWaiters
            upkeepWaiters = []
            for waiter in waiters { waiter.resume() }
        }
        let spooled = await committer.currentStatus.spooled
        let work = book.upkeep(now: Date(), closingAll: closingAll, mayClose: spooled == 0)
        guard !work.isEmpty else { return }
        for item in work {
            do {
                switch item {
                case .renew(let id, let account, let expiresAt):
                    let (store, ttl) = (self.store, book.policy.ttl)
                    // A late growth can be told apart only when every release the node made is in the
                    // ledger (no backlog) and nothing moved the lease while its amount was read.
                    let revision = book.leases[account]?.revision ?? -1
                    let quiet = growing[account] == nil && !committer.hasBacklog
                    let left = try await withLedgerDeadline(timeout, "a lease renewal") {
                        try await store.shrinkLease(id: id, by: .zero, ttl: ttl, close: false)
                    }
                    if let left {
                        book.renewed(leaseID: id, account: account, expiresAt: expiresAt)
                        if quiet && growing[account] == nil && !committer.hasBacklog {
                            book.reconcile(leaseID: id, account: account, ledgerAmount: left, revision: revision)
                        }
                    } else {
                        book.drop(leaseID: id, account: account)
                    }
                case .close(let id, _):
                    let store = self.store
                    _ = try await withLedgerDeadline(timeout, "a lease release") {
                        try await store.shrinkLease(id: id, by: .zero, ttl: 0, close: true)
                    }
                }
            } catch {
                // A lease not given back expires in the ledger after its TTL.
                logger.warning("lease upkeep failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
