import Alerts
import Foundation
import Gossip
import Ledger
import Logging
import ServiceLifecycle
import SignalboxCore

/// Looks for alert events every `checkInterval` and hands them to the dispatcher.
///
/// One event makes one delivery in a cluster because exactly one node reports each kind:
/// - what only this node can see — its ledger out of reach, its spool too old, an overage booked
///   by its own settlement — is reported by this node;
/// - what every node sees — members dead or left, endpoints routed around in the gossiped health
///   view, accounts and keys crossing a threshold in the shared ledger — is reported by the
///   **elected** node: the live member with the lowest id in this node's view. Gossip converges
///   every view, so the cluster elects one node; when it dies the next lowest takes over (it
///   starts its ledger cursor at the newest entry, so nothing is reported twice). During a
///   partition each side elects its own, as each side sees its own world.
public struct AlertWatcher: Service {
    let dispatcher: AlertDispatcher
    let ledger: any LedgerStore
    let committer: SettlementCommitter
    let cluster: ClusterNode?
    let health: HealthTracker
    let nodeID: String
    let logger: Logger

    public init(
        dispatcher: AlertDispatcher, ledger: any LedgerStore, committer: SettlementCommitter, cluster: ClusterNode?,
        health: HealthTracker, nodeID: String, logger: Logger
    ) {
        self.dispatcher = dispatcher
        self.ledger = ledger
        self.committer = committer
        self.cluster = cluster
        self.health = health
        self.nodeID = nodeID
        self.logger = logger
    }

    /// New entries read per look at most; a burst beyond it is skipped (and logged), not backlogged.
    static let entriesPerLook = 10_000
    /// Accounts and keys whose balance or usage one look reads at most (one query each); the
    /// biggest spenders of the look first.
    static let lookupsPerLook = 500

    public func run() async throws {
        var rules = AlertRules(balanceBelow: dispatcher.settings.balanceBelow, spoolAge: dispatcher.settings.spoolAge)
        var reader = EntryReader()
        // The first look comes at once: it places the ledger cursor before the node serves.
        var first = true
        while !Task.isShuttingDownGracefully {
            if !first {
                do { try await cancelWhenGracefulShutdown { try await Task.sleep(for: dispatcher.settings.checkInterval) } } catch {
                    return
                }
            }
            first = false
            var events: [AlertEvent] = []
            let status = await committer.currentStatus
            events += rules.ledger(reachable: status.ledgerReachable, oldestSpooled: await committer.oldestSpooledAge, node: nodeID)
            // Every node keeps the cluster-wide state current, so a node elected later reports
            // only what changes after it took over; only the elected node sends.
            var shared: [AlertEvent] = []
            if let cluster {
                shared += rules.members(
                    await cluster.agent.members.map {
                        AlertRules.MemberView(id: $0.id, region: $0.region, state: $0.status.rawValue, incarnation: $0.incarnation)
                    })
            }
            let now = health.now
            shared += rules.routedAround(Set(health.snapshot().endpoints.filter { $0.value.isDegraded(at: now) }.keys))
            if await isElected() {
                events += shared
                if status.ledgerReachable {
                    do {
                        events += try await sweep(&rules, reader: &reader)
                    } catch {
                        logger.warning("alerts: could not read new ledger entries", metadata: ["error": "\(error)"])
                    }
                }
            } else {
                reader = EntryReader()  // a node elected later starts from the newest entry
            }
            logger.debug(
                "alerts: looked", metadata: ["events": "\(events.count)", "cursor": "\(reader.cursor.map(String.init) ?? "none")"])
            for event in events { dispatcher.emit(event) }
        }
    }

    /// The live member with the lowest id reports cluster-wide events; a node that has not
    /// joined (alone, or refused for a wrong cluster key) reports none of them.
    func isElected() async -> Bool {
        guard let cluster else { return true }
        guard cluster.agent.isJoined else { return false }
        let live = await cluster.agent.members.filter { $0.status == .alive || $0.status == .suspect }.map(\.id)
        return (live.min() ?? nodeID) == nodeID
    }

    /// Which ledger entries a watcher has read. Entry ids are taken before their transaction
    /// commits, so an entry can appear after a newer one was read: each look re-reads a trailing
    /// window of ids below the newest seen and skips the ones it already read.
    struct EntryReader {
        var cursor: Int64?
        var seen: Set<Int64> = []
        /// Ids re-read below the newest seen; an entry committing later than this many newer
        /// entries is not examined.
        static let trailing: Int64 = 1_000
    }

    /// Reads the ledger entries since the last look and reports the accounts and keys they took across a threshold.
    func sweep(_ rules: inout AlertRules, reader: inout EntryReader) async throws -> [AlertEvent] {
        guard let newestSeen = reader.cursor else {
            reader.cursor = try await read { try await $0.entries(EntryQuery(limit: 1)) }.first?.transfer.id ?? 0
            return []
        }
        var fresh: [Transfer] = []
        var query = EntryQuery(limit: 1000)
        query.after = max(0, newestSeen - EntryReader.trailing)
        while fresh.count < Self.entriesPerLook {
            let page = try await read { [query] in try await $0.entries(query) }
            fresh += page.map(\.transfer).filter { !reader.seen.contains($0.id) }
            guard page.count == query.limit, let last = page.last?.transfer.id else { break }
            query.before = last
        }
        if fresh.count >= Self.entriesPerLook {
            logger.warning("alerts: more new ledger entries than one look reads; the oldest were not checked")
        }
        guard !fresh.isEmpty else { return [] }
        let newest = max(newestSeen, fresh.map(\.id).max() ?? newestSeen)
        reader.cursor = newest
        reader.seen.formUnion(fresh.map(\.id))
        reader.seen = reader.seen.filter { $0 > newest - EntryReader.trailing }
        var movements: [String: [AlertRules.Movement]] = [:]
        var keys: [String: (account: String, added: Money, last: Int64)] = [:]
        for transfer in fresh where transfer.kind == .charge {
            movements[transfer.debitAccount, default: []].append(.init(entry: transfer.id, amount: .zero - transfer.amount, isCharge: true))
            if let key = transfer.keyID {
                keys[key, default: (transfer.debitAccount, .zero, 0)].added += transfer.amount
                keys[key]!.last = max(keys[key]!.last, transfer.id)
            }
        }
        // Whatever else moved a spending account in the same look (credit added, a reversal).
        for transfer in fresh where transfer.kind != .charge {
            if movements[transfer.creditAccount] != nil {
                movements[transfer.creditAccount]!.append(.init(entry: transfer.id, amount: transfer.amount, isCharge: false))
            }
            if movements[transfer.debitAccount] != nil {
                movements[transfer.debitAccount]!.append(.init(entry: transfer.id, amount: .zero - transfer.amount, isCharge: false))
            }
        }
        var accountChanges: [AlertRules.AccountChange] = []
        if rules.balanceBelow != nil {
            let spenders = movements.sorted { spent($0.value) > spent($1.value) || (spent($0.value) == spent($1.value) && $0.key < $1.key) }
            if spenders.count > Self.lookupsPerLook {
                logger.warning("alerts: more accounts spent in one look than it checks", metadata: ["accounts": "\(spenders.count)"])
            }
            for (account, moves) in spenders.prefix(Self.lookupsPerLook) {
                let balance = try await read { try await $0.balance(account: account) }.balance
                accountChanges.append(.init(account: account, balance: balance, movements: moves))
            }
        }
        var keyChanges: [AlertRules.KeyChange] = []
        for (keyID, change) in keys.sorted(by: { $0.value.added > $1.value.added || ($0.value.added == $1.value.added && $0.key < $1.key) })
            .prefix(Self.lookupsPerLook)
        {
            guard let key = try await read({ try await $0.key(id: keyID) }), let limit = key.limit else { continue }
            let spent = try await read { try await $0.keyUsage(keyID: keyID, now: Date()) }.spent(resetting: key.limitReset)
            keyChanges.append(
                .init(keyID: keyID, account: change.account, limit: limit, spent: spent, added: change.added, lastEntry: change.last))
        }
        return rules.accounts(accountChanges) + rules.keys(keyChanges)
    }

    /// One ledger read, given up after 5 s: a ledger that stops answering must not stop the
    /// watcher (which then reports it unreachable).
    private func read<T: Sendable>(_ operation: @escaping @Sendable (any LedgerStore) async throws -> T) async throws -> T {
        let ledger = self.ledger
        return try await withLedgerDeadline(.seconds(5), "an alert check's ledger read") { try await operation(ledger) }
    }

    /// What an account's charges in a look add up to.
    private func spent(_ movements: [AlertRules.Movement]) -> Money {
        movements.filter(\.isCharge).reduce(Money.zero) { $0 - $1.amount }
    }
}
