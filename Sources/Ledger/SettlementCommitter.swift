import Foundation
import Logging
import NIOConcurrencyHelpers

/// Group commit for settlements, with a spool for when the ledger is down.
///
/// Requests hand their settlement to `submit` and wait for it to be durable. While one batch is
/// being committed the next ones queue, and go together in the next transaction, so a busy node
/// writes one ledger transaction per batch instead of one per request. When the ledger cannot be
/// reached, the batch is appended to the local spool (fsync'd) instead and replayed, in the same
/// batches and idempotently, once the ledger answers again.
public actor SettlementCommitter {
    /// Where a submitted settlement ended up.
    public enum Receipt: Sendable, Hashable {
        case committed
        /// In the local spool, to be replayed into the ledger.
        case spooled
        /// Refused by the ledger (bad data) and kept in the spool's reject file for an operator;
        /// or, with no spool configured, lost with an error logged.
        case rejected
    }

    /// Numbers for `/readyz` and metrics.
    public struct Status: Sendable, Hashable {
        public var ledgerReachable: Bool
        public var spooled: Int
        public var committedSettlements: Int
        public var committedBatches: Int
    }

    let store: any LedgerStore
    /// Shared with the rest of the node; the committer turns it off on failures and back on
    /// once its recovery loop reaches the ledger again.
    public nonisolated let reachability: LedgerReachability
    let spool: SettlementSpool?
    let rejects: SettlementSpool?
    let maxBatch: Int
    let timeout: Duration
    let replayInterval: Duration
    let logger: Logger
    /// Called after each committed batch with its size (for metrics).
    let onCommit: @Sendable (Int) -> Void

    private var queue: [(settlement: Settlement, continuation: CheckedContinuation<Receipt, Never>)] = []
    /// Batches being committed right now (at most `maxInFlight`, each on its own connection).
    private var inFlight = 0
    let maxInFlight: Int
    private var idleWaiters: [CheckedContinuation<Void, Never>] = []
    private var replaying: Task<Void, Never>?
    private var replayInProgress = false
    private var status = Status(ledgerReachable: true, spooled: 0, committedSettlements: 0, committedBatches: 0)
    private var recovering: Task<Void, Never>?
    /// Reservations committed settlements found closed (lease id → account), for their owner.
    private nonisolated let closedReservations = NIOLockedValueBox<[String: String]>([:])

    /// Leases (id → account) the ledger found no longer open while settling, since the last call:
    /// their owner must stop reserving from them.
    public nonisolated func takeClosedReservations() -> [String: String] {
        closedReservations.withLockedValue { closed in
            defer { closed.removeAll() }
            return closed
        }
    }

    /// `spool`: where settlements go while the ledger is down; without one they are logged and lost.
    public init(store: any LedgerStore, spool: SettlementSpool?, rejects: SettlementSpool? = nil, maxBatch: Int = 256,
                maxInFlight: Int = 2, timeout: Duration = .seconds(3), replayInterval: Duration = .seconds(1),
                reachability: LedgerReachability = LedgerReachability(), logger: Logger,
                onCommit: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.store = store
        self.reachability = reachability
        self.spool = spool
        self.rejects = rejects
        self.maxBatch = maxBatch
        self.maxInFlight = max(1, maxInFlight)
        self.timeout = timeout
        self.replayInterval = replayInterval
        self.logger = logger
        self.onCommit = onCommit
    }

    /// Replays what an earlier run left in the spool (call once at start).
    public func start() async {
        status.spooled = await spool?.count ?? 0
        if status.spooled > 0 {
            logger.warning("replaying spooled settlements", metadata: ["count": "\(status.spooled)"])
            startRecovery()
        }
    }

    public var currentStatus: Status {
        var current = status
        current.ledgerReachable = reachability.isReachable
        return current
    }

    /// Someone on the node saw the ledger fail: stop waiting on it until it answers again.
    public func noticeOutage() {
        reachability.set(false)
        startRecovery()
    }

    /// Checks that the ledger answers (a cheap read), so `/readyz` notices an outage even
    /// without traffic, and replays the spool once the ledger is back.
    public func probe() async {
        if await reach() {
            if status.spooled > 0 { startRecovery() }
        } else {
            noticeOutage()
        }
    }

    private func reach() async -> Bool {
        let store = self.store
        do {
            _ = try await withLedgerDeadline(timeout, "a ledger probe") { try await store.account(id: "platform:fees") }
            reachability.set(true)
            return true
        } catch {
            return false
        }
    }

    /// Hands over a settlement; returns once it is committed or spooled.
    public func submit(_ settlement: Settlement) async -> Receipt {
        await withCheckedContinuation { continuation in
            queue.append((settlement, continuation))
            pump()
        }
    }

    /// Waits until everything submitted so far is committed or spooled.
    public func flush() async {
        guard inFlight > 0 || !queue.isEmpty else { return }
        await withCheckedContinuation { idleWaiters.append($0) }
    }

    /// Commits the spool now (for tests and shutdown); true when it is empty afterwards.
    @discardableResult
    public func replaySpool() async -> Bool {
        guard let spool else { return true }
        // One replay at a time: two would each drop the lines they read from the spool.
        guard !replayInProgress else { return false }
        replayInProgress = true
        defer { replayInProgress = false }
        do {
            while true {
                let pending = try await spool.pending()
                guard !pending.isEmpty else { break }
                let batch = Array(pending.prefix(maxBatch))
                try await commitToLedger(batch)
                try await spool.removeFirst(batch.count)
                status.spooled = max(0, status.spooled - batch.count)
                logger.info("replayed spooled settlements", metadata: ["count": "\(batch.count)"])
            }
            status.spooled = 0
            return true
        } catch let error as LedgerError where error.isRefusal {
            // One bad settlement must not hold the rest back: replay them one by one.
            return await replayOneByOne(spool)
        } catch {
            reachability.set(false)
            return false
        }
    }

    private func replayOneByOne(_ spool: SettlementSpool) async -> Bool {
        do {
            for settlement in try await spool.pending() {
                do {
                    try await commitToLedger([settlement])
                } catch let error as LedgerError where error.isRefusal {
                    await reject(settlement, error)
                }
                try await spool.removeFirst(1)
            }
            status.spooled = 0
            return true
        } catch {
            reachability.set(false)
            return false
        }
    }

    /// Starts batches while fewer than `maxInFlight` are being committed. Whatever queues while
    /// they run goes into the next batch: that is the group commit.
    private func pump() {
        while inFlight < maxInFlight && !queue.isEmpty {
            // Leases in a fixed order, so two batches in flight never wait on each other's rows in a cycle.
            let batch = Array(queue.prefix(maxBatch)).sorted { Self.lockOrder($0.settlement) < Self.lockOrder($1.settlement) }
            queue.removeFirst(batch.count)
            inFlight += 1
            Task {
                let receipts = await self.commit(batch.map(\.settlement))
                await self.finished(batch.map(\.continuation), receipts)
            }
        }
        if inFlight == 0 && queue.isEmpty {
            let waiters = idleWaiters
            idleWaiters = []
            for waiter in waiters { waiter.resume() }
        }
    }

    private func finished(_ continuations: [CheckedContinuation<Receipt, Never>], _ receipts: [Receipt]) {
        for (continuation, receipt) in zip(continuations, receipts) { continuation.resume(returning: receipt) }
        inFlight -= 1
        pump()
    }

    private static func lockOrder(_ settlement: Settlement) -> String {
        switch settlement.reservation {
        case .hold(let id)?, .lease(let id, _)?: id
        case nil: ""
        }
    }

    private func commitToLedger(_ batch: [Settlement]) async throws {
        let store = self.store
        let result = try await withLedgerDeadline(timeout, "a settlement batch") { try await store.settle(batch) }
        if !result.closedReservations.isEmpty {
            var accounts: [String: String] = [:]
            for settlement in batch {
                if case .lease(let id, _)? = settlement.reservation, result.closedReservations.contains(id) {
                    accounts[id] = settlement.generation.accountID
                }
            }
            closedReservations.withLockedValue { $0.merge(accounts) { $1 } }
            logger.warning("settlements landed on leases the ledger had already closed", metadata: ["leases": "\(accounts.count)"])
        }
        reachability.set(true)
        status.committedSettlements += batch.count
        status.committedBatches += 1
        onCommit(batch.count)
    }

    private func commit(_ batch: [Settlement]) async -> [Receipt] {
        do {
            // During a known outage, do not wait for another timeout: spool at once.
            guard reachability.isReachable else { throw LedgerError.unreachable("outage in progress") }
            try await commitToLedger(batch)
            return Array(repeating: .committed, count: batch.count)
        } catch let error as LedgerError where error.isRefusal {
            guard batch.count > 1 else {
                await reject(batch[0], error)
                return [.rejected]
            }
            // Find the bad one; the others still commit.
            var receipts: [Receipt] = []
            for settlement in batch { receipts += await commit([settlement]) }
            return receipts
        } catch {
            if reachability.isReachable {
                logger.error("ledger unreachable; spooling settlements", metadata: ["count": "\(batch.count)", "error": "\(error)"])
            }
            noticeOutage()
            guard let spool else { return Array(repeating: .rejected, count: batch.count) }
            do {
                try await spool.append(batch)
                status.spooled += batch.count
                return Array(repeating: .spooled, count: batch.count)
            } catch {
                logger.critical("cannot spool settlements", metadata: ["error": "\(error)"])
                return Array(repeating: .rejected, count: batch.count)
            }
        }
    }

    private func reject(_ settlement: Settlement, _ error: any Error) async {
        logger.critical("the ledger refused a settlement", metadata: [
            "generation": "\(settlement.generation.id)", "error": "\(error)",
        ])
        try? await rejects?.append([settlement])
    }

    /// Until the ledger answers and the spool is empty: probe, then replay, every `replayInterval`.
    private func startRecovery() {
        guard recovering == nil else { return }
        recovering = Task {
            while await !self.recover() {
                try? await Task.sleep(for: self.replayInterval)
            }
            await self.recoveryFinished()
        }
    }

    private func recover() async -> Bool {
        guard await reach() else { return false }
        return await replaySpool()
    }

    private func recoveryFinished() {
        recovering = nil
        if status.spooled > 0 || !reachability.isReachable { startRecovery() }
    }
}
