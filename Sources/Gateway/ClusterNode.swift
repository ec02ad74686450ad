import Foundation
import Gossip
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import SignalboxCore

/// A router node's place in the cluster: its gossip agent and what the node shares through it.
///
/// Replicated state keys:
/// - `health/<node>`: the node's `NodeHealthReport` (compact text). Published at once when the set
///   of endpoints it routes around changes (checked every 100 ms, sent straight to every live
///   member), when its counts changed and 5 s passed, and otherwise re-announced every 10 s
///   (a notice with an unchanged digest: nothing to fetch). Other nodes fold it into their routing
///   view for `HealthTracker.reportLifetime` after it was made, dated by the age gossip carries.
/// - `routing/<region>`: a `RegionRoutingTable`, set through the admin API on any node; every node
///   keeps the latest in `<data-dir>/routing-tables.json` and loads it at start.
/// - `rate/<node>/<account>`: the node's free-tier counts for the account this minute and day
///   (`FreeTierCounters`), pushed to every live member at once when they change.
public final class ClusterNode: Service, Sendable {
    public let agent: GossipAgent
    public let nodeID: String
    public let region: String
    let health: HealthTracker
    private let tables: NIOLockedValueBox<[String: RegionRoutingTable]>
    private let counters: NIOLockedValueBox<FreeTierCounters>
    private let savedState: NIOLockedValueBox<[String: StateEntry]>
    private let tablesPath: String?
    private let logger: Logger

    public init(
        myself: Member, bind: MemberAddress, seeds: [MemberAddress], keyring: ClusterKeyring, keyringPath: String?,
        keyringReload: KeyringReloadRequests? = nil, settings: SwimSettings = SwimSettings(), health: HealthTracker,
        tablesPath: String?, logger: Logger
    ) {
        let tables = NIOLockedValueBox<[String: RegionRoutingTable]>([:])
        let saved = NIOLockedValueBox<[String: StateEntry]>([:])
        let counters = NIOLockedValueBox(FreeTierCounters())
        self.counters = counters
        let selfID = myself.id
        self.nodeID = myself.id
        self.region = myself.region
        self.health = health
        self.tables = tables
        self.savedState = saved
        self.tablesPath = tablesPath
        self.logger = logger
        agent = GossipAgent(
            myself: myself, bind: bind, seeds: seeds, keyring: keyring, keyringPath: keyringPath, keyringReload: keyringReload,
            settings: settings, logger: logger,
            onMemberChange: { member in
                if member.status.isGone && member.id != selfID { health.absorb(node: member.id, report: nil) }
            },
            onStateChange: { entry, ageMillis in
                if entry.key.hasPrefix("health/") {
                    let node = String(entry.key.dropFirst("health/".count))
                    guard node != selfID else { return }
                    let madeAt = health.now - Double(ageMillis) / 1000
                    health.absorb(node: node, report: NodeHealthReport(text: entry.value, at: madeAt))
                } else if entry.key.hasPrefix("rate/") {
                    let parts = entry.key.split(separator: "/", maxSplits: 2).map(String.init)
                    guard parts.count == 3, let counts = FreeTierCounters.Counts(text: entry.value) else { return }
                    if parts[1] == selfID {
                        // Written by this node's previous run: resume from it.
                        counters.withLockedValue { $0.resume(account: parts[2], counts: counts) }
                    } else {
                        counters.withLockedValue { $0.absorb(node: parts[1], account: parts[2], counts: counts) }
                    }
                } else if entry.key.hasPrefix("routing/") {
                    let region = String(entry.key.dropFirst("routing/".count))
                    if let table = try? JSONDecoder().decode(RegionRoutingTable.self, from: Data(entry.value.utf8)) {
                        tables.withLockedValue { $0[region] = table }
                        saved.withLockedValue { $0[entry.key] = entry }
                        if let tablesPath { Self.save(saved.withLockedValue { $0 }, to: tablesPath, logger: logger) }
                    }
                }
            },
            onStateRemoved: { key in
                if key.hasPrefix("health/") {
                    health.absorb(node: String(key.dropFirst("health/".count)), report: nil)
                } else if key.hasPrefix("rate/") {
                    let parts = key.split(separator: "/", maxSplits: 2).map(String.init)
                    if parts.count == 3 { counters.withLockedValue { $0.forget(node: parts[1], account: parts[2]) } }
                }
            })
    }

    /// The routing table of a region; an empty one (everything allowed) when none was set.
    public func table(for region: String) -> RegionRoutingTable { tables.withLockedValue { $0[region] } ?? RegionRoutingTable() }

    public func tableIsSet(for region: String) -> Bool { tables.withLockedValue { $0[region] != nil } }

    /// Sets a region's table cluster-wide.
    public func setTable(_ table: RegionRoutingTable, for region: String) async throws {
        let value = String(decoding: try JSONEncoder().encode(table), as: UTF8.self)
        await agent.publish(key: "routing/" + region, value: value)
    }

    /// Admits a free-tier request if the cluster-wide counts allow it, counting it at once and
    /// pushing the new count to every live member. Returns the limit it hit, if any.
    public func admitFree(account: String, dailyLimit: Int, now: Double) async -> (limit: Int, used: Int, perMinute: Bool)? {
        let outcome: Result<FreeTierCounters.Counts, FreeTierRefusal> = counters.withLockedValue { counters in
            let used = counters.used(account: account, now: now)
            if used.minute >= FreeTier.requestsPerMinute {
                return .failure(FreeTierRefusal(limit: FreeTier.requestsPerMinute, used: used.minute, perMinute: true))
            }
            if used.day >= dailyLimit { return .failure(FreeTierRefusal(limit: dailyLimit, used: used.day, perMinute: false)) }
            return .success(counters.admit(account: account, now: now))
        }
        switch outcome {
        case .success(let counts):
            await agent.publish(key: "rate/\(nodeID)/\(account)", value: counts.text, urgent: true)
            return nil
        case .failure(let refusal):
            return (refusal.limit, refusal.used, refusal.perMinute)
        }
    }

    struct FreeTierRefusal: Error {
        var limit: Int
        var used: Int
        var perMinute: Bool
    }

    public func run() async throws {
        if let tablesPath, let data = FileManager.default.contents(atPath: tablesPath),
            let entries = try? JSONDecoder().decode([StateEntry].self, from: data)
        {
            await agent.restore(entries)
        }
        // The agent leaves the cluster by itself on graceful shutdown; run until it has.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await self.agent.run()
                return true
            }
            group.addTask {
                await self.publishHealth()
                return false
            }
            while let agentFinished = try await group.next() {
                if agentFinished { break }
            }
            group.cancelAll()
        }
    }

    /// Announces that this node drains (peers stop forwarding to it; it ends `left`, never `dead`).
    public func startDraining() async {
        await agent.startLeaving()
    }

    /// Publishes this node's health report: at once (to every live member) when what it routes
    /// around changes; at once when it reports on a new endpoint; when only its counts changed,
    /// after 5 s; else a refresh every 10 s (unchanged: a notice, nothing to fetch). Also
    /// expires other nodes' reports and ended free-tier windows.
    private func publishHealth() async {
        var lastDegraded: Set<String>?
        var lastText = ""
        var lastEndpoints: Set<String> = []
        var lastPublished = ContinuousClock.now
        var lastUpkeep = ContinuousClock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await Task.sleep(for: .milliseconds(100))
            let now = ContinuousClock.now
            if now - lastUpkeep >= .seconds(1) {
                lastUpkeep = now
                counters.withLockedValue { $0.forgetEnded(now: Date().timeIntervalSince1970) }
                health.expireReports()
            }
            let report = health.localReport()
            let degraded = report.degradedKeys
            let text = report.text
            let changedRouting = degraded != lastDegraded
            let endpoints = Set(report.endpoints.keys)
            let since = now - lastPublished
            guard changedRouting || endpoints != lastEndpoints || (text != lastText && since >= .seconds(5)) || since >= .seconds(10)
            else { continue }
            await agent.publish(key: "health/" + nodeID, value: text, urgent: changedRouting)
            lastDegraded = degraded
            lastEndpoints = endpoints
            lastText = text
            lastPublished = now
        }
    }

    private static func save(_ entries: [String: StateEntry], to path: String, logger: Logger) {
        do {
            let data = try JSONEncoder().encode(entries.values.sorted { $0.key < $1.key })
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.error("cannot save routing tables", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }
}
