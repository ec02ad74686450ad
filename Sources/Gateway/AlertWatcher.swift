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

    public func run() async throws {
        var rules = AlertRules(balanceBelow: dispatcher.settings.balanceBelow, spoolAge: dispatcher.settings.spoolAge)
        var cursor: Int64?
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
            if await isElected() {
                if let cluster {
                    events += rules.members(
                        await cluster.agent.members.map {
                            AlertRules.MemberView(id: $0.id, region: $0.region, state: $0.status.rawValue, incarnation: $0.incarnation)
                        })
                }
                let now = health.now
                events += rules.routedAround(Set(health.snapshot().endpoints.filter { $0.value.isDegraded(at: now) }.keys))
                if status.ledgerReachable {
                    do {
                        events += try await sweep(&rules, cursor: &cursor)
                    } catch {
                        logger.warning("alerts: could not read new ledger entries", metadata: ["error": "\(error)"])
                    }
                }
            } else {
                cursor = nil  // a node elected later starts from the newest entry
            }
            logger.debug("alerts: looked", metadata: ["events": "\(events.count)", "cursor": "\(cursor.map(String.init) ?? "none")"])
            for event in events { dispatcher.emit(event) }
        }
    }

    /// The live member with the lowest id is the one that reports cluster-wide events.
    func isElected() async -> Bool {
        guard let cluster else { return true }
        let live = await cluster.agent.members.filter { $0.status == .alive || $0.status == .suspect }.map(\.id)
        return (live.min() ?? nodeID) == nodeID
    }

    /// Reads the ledger entries since `cursor` and reports the accounts and keys they took across a threshold.
    func sweep(_ rules: inout AlertRules, cursor: inout Int64?) async throws -> [AlertEvent] {
        guard let start = cursor else {
            cursor = try await ledger.entries(EntryQuery(limit: 1)).first?.transfer.id ?? 0
            return []
        }
        var fresh: [Transfer] = []
        var query = EntryQuery(limit: 1000)
        while fresh.count < Self.entriesPerLook {
            let page = try await ledger.entries(query)
            fresh += page.map(\.transfer).filter { $0.id > start }
            guard page.count == query.limit, let last = page.last?.transfer.id, last > start + 1 else { break }
            query.before = last
        }
        guard let newest = fresh.map(\.id).max() else { return [] }
        cursor = newest
        if fresh.count >= Self.entriesPerLook {
            logger.warning("alerts: more new ledger entries than one look reads; the oldest were not checked")
        }
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
            for (account, moves) in movements.sorted(by: { $0.key < $1.key }) {
                let balance = try await ledger.balance(account: account).balance
                accountChanges.append(.init(account: account, balance: balance, movements: moves))
            }
        }
        var keyChanges: [AlertRules.KeyChange] = []
        for (keyID, change) in keys.sorted(by: { $0.key < $1.key }) {
            guard let key = try await ledger.key(id: keyID), let limit = key.limit else { continue }
            let spent = try await ledger.keyUsage(keyID: keyID, now: Date()).spent(resetting: key.limitReset)
            keyChanges.append(
                .init(keyID: keyID, account: change.account, limit: limit, spent: spent, added: change.added, lastEntry: change.last))
        }
        return rules.accounts(accountChanges) + rules.keys(keyChanges)
    }
}
