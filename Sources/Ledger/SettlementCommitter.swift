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
        /// The ledger is down and the spool cannot be written: kept in memory and retried; the
        /// node refuses paid requests until it is durable.
        case held
        /// Refused by the ledger (bad data) and kept in the spool's reject file for an operator;
        /// or, with no spool configured, lost with an error logged.
        case rejected
    }

    /// Numbers for `/readyz` and metrics.
    public struct Status: Sendable, Hashable {
        public var ledgerReachable: Bool
        public var spooled: Int
        /// Settlements neither committed nor spooled (the spool could not be written).
        public var held = 0
        /// Settlements set aside in the reject file since start.
        public var rejected = 0
        public var committedSettlements: Int
        public var committedBatches: Int
    }

    let store: any SettlementStore & AccountStore
    /// Shared with the rest of the node; the committer turns it off on failures and back on
    /// once its recovery loop reaches the ledger again.
    public nonisolated let reachability: LedgerReachability
    let spool: SettlementSpool?
    let rejects: SettlementSpool?
    let maxBatch: Int
    let timeout: Duration
    let replayInterval: Duration
    /// A spooled settlement older than this makes the node refuse paid requests.
    let maxSpoolAge: TimeInterval
    /// A settlement whose commit fails this many times with the ledger reachable is set aside.
    let poisonThreshold = 3
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
    private var status = Status(ledgerReachable: true, spooled: 0, committedSettlements: 0, committedBatches: 0) {
        didSet { publishBacklog() }
    }
    private var recovering: Task<Void, Never>?
    /// Settlements the spool could not take (disk full, read-only): retried before anything else.
    private var held: [Settlement] = [] {
        didSet { publishBacklog() }
    }
    /// Settlements not in the ledger yet because it could not take them (spooled or held), for
    /// readers that cannot wait on the actor.
    private nonisolated let backlogCount = NIOLockedValueBox(0)

    /// Whether any settlement waits outside the ledger (spool or memory) right now. A lease's
    /// amount read from the ledger while this is false includes every release the node made.
    public nonisolated var hasBacklog: Bool { backlogCount.withLockedValue { $0 > 0 } }

    private func publishBacklog() {
        let count = status.spooled + held.count
        backlogCount.withLockedValue { $0 = count }
    }
    /// Failures of single settlements with the ledger reachable, by generation id.
    private var strikes: [String: Int] = [:]
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
    public init(
        store: any SettlementStore & AccountStore, spool: SettlementSpool?, rejects: SettlementSpool? = nil, maxBatch: Int = 512,
        maxInFlight: Int = 2, timeout: Duration = .seconds(3), replayInterval: Duration = .seconds(1),
        maxSpoolAge: TimeInterval = 3600, reachability: LedgerReachability = LedgerReachability(), logger: Logger,
        onCommit: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.store = store
        self.reachability = reachability
        self.spool = spool
        self.rejects = rejects
        self.maxBatch = maxBatch
        self.maxInFlight = max(1, maxInFlight)
        self.timeout = timeout
        self.replayInterval = replayInterval
        self.maxSpoolAge = maxSpoolAge
        self.logger = logger
        self.onCommit = onCommit
    }

    /// Replays what an earlier run left in the spool (call once at start).
    public func start() async {
        if let spool {
            let recovery = await spool.recovery
            if recovery != SettlementSpool.Recovery() {
                logger.warning(
                    "the settlement spool was damaged; recovered what it held",
                    metadata: [
                        "torn_tail_bytes": "\(recovery.truncatedBytes)", "corrupt_records": "\(recovery.corruptRecords)",
                        "converted_legacy_records": "\(recovery.convertedLegacyRecords)",
                    ])
            }
        }
        status.spooled = await spool?.count ?? 0
        await updateBacklog()
        if status.spooled > 0 {
            logger.warning("replaying spooled settlements", metadata: ["count": "\(status.spooled)"])
            startRecovery()
        }
    }

    public var currentStatus: Status {
        var current = status
        current.ledgerReachable = reachability.isReachable
        current.held = held.count
        return current
    }

    /// How long the oldest spooled settlement has waited for the ledger; nil when none waits.
    public var oldestSpooledAge: TimeInterval? {
        get async {
            guard let oldest = await spool?.oldest else { return nil }
            return Date().timeIntervalSince(oldest)
        }
    }

    /// Paid requests stop while settlements are held in memory or the spool's oldest is too old.
    private func updateBacklog() async {
        var backlogged = !held.isEmpty
        if let oldest = await spool?.oldest, Date().timeIntervalSince(oldest) > maxSpoolAge { backlogged = true }
        if backlogged != reachability.isBacklogged {
            reachability.setBacklogged(backlogged)
            if backlogged {
                logger.critical(
                    "settlements are waiting outside the ledger too long; refusing paid requests",
                    metadata: [
                        "held_in_memory": "\(held.count)", "max_spool_age_seconds": "\(Int(maxSpoolAge))",
                    ])
            } else {
                logger.notice("settlement backlog cleared; admitting paid requests again")
            }
        }
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

    /// Commits what waits outside the ledger now — settlements held in memory, then the spool,
    /// read forward in batches from its checkpoint (for tests and shutdown); true when nothing
    /// is left. A batch that fails with the ledger reachable is retried one settlement at a time;
    /// one the ledger refuses, or that fails `poisonThreshold` times, is set aside in the reject
    /// file with its reason, so it never blocks the rest.
    @discardableResult
    public func replaySpool() async -> Bool {
        // One replay at a time: two would each commit the records they read.
        guard !replayInProgress else { return false }
        replayInProgress = true
        defer { replayInProgress = false }
        defer { Task { await self.updateBacklog() } }
        guard await commitHeld() else { return false }
        guard let spool else { return true }
        while true {
            let records: [SettlementSpool.Record]
            do {
                records = try await spool.next(maxBatch)
            } catch {
                logger.critical("cannot read the settlement spool", metadata: ["error": "\(error)"])
                return false
            }
            guard let last = records.last else { break }
            do {
                try await commitToLedger(records.map(\.settlement))
                try await spool.advance(past: last, replayed: records.count)
                status.spooled = await spool.count
                logger.info("replayed spooled settlements", metadata: ["count": "\(records.count)"])
                continue
            } catch {
                guard await reach() else { return false }
            }
            for record in records {
                guard await commitOrSetAside(record.settlement) else { return false }
                do {
                    try await spool.advance(past: record, replayed: 1)
                } catch {
                    logger.critical("cannot checkpoint the settlement spool", metadata: ["error": "\(error)"])
                    return false
                }
            }
            status.spooled = await spool.count
        }
        status.spooled = 0
        return true
    }

    /// Commits one settlement, or sets it aside when the ledger refuses it or it keeps failing
    /// with the ledger reachable. False when the ledger is out of reach (try again later).
    private func commitOrSetAside(_ settlement: Settlement) async -> Bool {
        do {
            try await commitToLedger([settlement])
            strikes[settlement.generation.id] = nil
            return true
        } catch let error as LedgerError where error.isRefusal {
            await reject(settlement, error)
            return true
        } catch LedgerError.unreachable {
            return false  // slow or gone: no strike, a timeout says nothing about the settlement
        } catch {
            guard await reach() else { return false }
            let count = (strikes[settlement.generation.id] ?? 0) + 1
            strikes[settlement.generation.id] = count
            guard count >= poisonThreshold else { return false }
            strikes[settlement.generation.id] = nil
            await reject(settlement, error)
            return true
        }
    }

    /// Settlements the spool could not take: to the ledger if it answers, else to the spool.
    private func commitHeld() async -> Bool {
        guard !held.isEmpty else { return true }
        // They stay in `held` until they are durable elsewhere, so the backlog never dips meanwhile.
        let waiting = held
        do {
            try await commitToLedger(waiting)
            held.removeFirst(waiting.count)
            return true
        } catch {
            if let spool, (try? await spool.append(waiting)) != nil {
                status.spooled += waiting.count
                held.removeFirst(waiting.count)
            }
            return false
        }
    }

    /// Starts batches while fewer than `maxInFlight` are being committed. Whatever queues while
    /// they run goes into the next batch: that is the group commit.
    /// A further batch goes in flight beside a running one only when this many settlements
    /// wait: under ordinary load they wait for the running batch and go together (fewer, larger
    /// transactions); a deep queue is worth a second connection.
    static let parallelBatchThreshold = 64

    private func pump() {
        while inFlight < maxInFlight && !queue.isEmpty && (inFlight == 0 || queue.count >= Self.parallelBatchThreshold) {
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
        case .lease(let id, _)?: id
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
                await updateBacklog()
                return Array(repeating: .spooled, count: batch.count)
            } catch {
                // Never dropped: kept in memory and retried, and paid requests stop until it is durable.
                logger.critical("cannot spool settlements; holding them in memory", metadata: ["error": "\(error)"])
                held += batch
                await updateBacklog()
                return Array(repeating: .held, count: batch.count)
            }
        }
    }

    private func reject(_ settlement: Settlement, _ error: any Error) async {
        logger.critical(
            "a settlement was set aside in the reject file",
            metadata: [
                "generation": "\(settlement.generation.id)", "error": "\(error)",
            ])
        status.rejected += 1
        do {
            try await rejects?.append([settlement], reason: "\(error)")
        } catch {
            // The reject file cannot be written either: the log line is the record an operator gets.
            let json = (try? JSONEncoder().encode(settlement)).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            logger.critical(
                "cannot write the reject file; the set-aside settlement follows",
                metadata: [
                    "error": "\(error)", "settlement": "\(json)",
                ])
        }
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
        guard await reach() else {
            _ = await commitHeld()  // the ledger is down: at least get held settlements onto disk
            await updateBacklog()
            return false
        }
        return await replaySpool()
    }

    private func recoveryFinished() {
        recovering = nil
        if status.spooled > 0 || !held.isEmpty || !reachability.isReachable { startRecovery() }
    }
}
