import Foundation
import Gossip

/// A cluster of `size` members in virtual time, byte-accurate (every datagram is measured against
/// the limit once framed and sealed), with health republished as production does under traffic:
/// each node's ~2.5 KB report with new counts every 5 s. It measures steady-state traffic, how
/// long an urgent health change takes to reach every member, how long a crash takes to be seen by
/// all, and false deaths at 10 % loss. `swift test` runs it at 100 members; `gossip-sim` at 1,000.
public struct ScaleScenario {
    public struct Report: Sendable, CustomStringConvertible {
        public var size: Int
        /// How long the cluster took to form; nil when it never did (nothing after that means much).
        public var formed: Duration?
        public var largestDatagram: Int
        public var oversizeDatagrams: Int
        public var datagramsPerNodePerSecond: Double
        public var datagramBytesPerNodePerSecond: Double
        public var streamBytesPerNodePerSecond: Double
        public var healthChangeReachedAll: Duration?
        public var crashSeenByAll: Duration?
        public var crashSeenBy: Int
        public var falseDeathsAtTenPercentLoss: Int

        public var description: String {
            func seconds(_ duration: Duration?) -> String {
                guard let duration else { return "never" }
                let (s, attos) = duration.components
                return String(format: "%.2f s", Double(s) + Double(attos) / 1e18)
            }
            return """
                swim n=\(size) (byte-accurate, limit 1400 B): formed in \(seconds(formed)); largest datagram \(largestDatagram) B, \
                \(oversizeDatagrams) over the limit; per node \(Int(datagramsPerNodePerSecond)) datagrams/s, \
                \(Int(datagramBytesPerNodePerSecond)) B/s of datagrams, \(Int(streamBytesPerNodePerSecond)) B/s over TCP \
                (every node busy: a new 2.5 KB report every 5 s); an urgent health change on every node after \
                \(seconds(healthChangeReachedAll)); a crash seen dead by all after \(seconds(crashSeenByAll)) \
                (\(crashSeenBy) of \(size - 1)); false deaths at 10% loss over 20 s: \(falseDeathsAtTenPercentLoss)
                """
        }
    }

    public let size: Int
    public let seed: UInt64

    public init(size: Int, seed: UInt64 = 1000) {
        self.size = size
        self.seed = seed
    }

    public func run() -> Report {
        var cluster = ClusterSimulation(size: size, seed: seed)
        let reporter = size / 2, victim = size * 3 / 4 + 2
        cluster.trackedStateKeys = ["health/node-\(reporter)"]
        let formed = cluster.formCluster(timeout: .seconds(300))
        cluster.health = (.seconds(5), 2500, true)
        cluster.run(for: .seconds(5))
        let (datagrams0, bytes0, streams0) = (cluster.messagesSent, cluster.datagramBytes.reduce(0, +), cluster.streamBytes.reduce(0, +))
        let window = 5
        cluster.run(for: .seconds(window))
        let perNode = { (value: Int) in Double(value) / Double(size) / Double(window) }
        var report = Report(
            size: size, formed: formed, largestDatagram: 0, oversizeDatagrams: 0,
            datagramsPerNodePerSecond: perNode(cluster.messagesSent - datagrams0),
            datagramBytesPerNodePerSecond: perNode(cluster.datagramBytes.reduce(0, +) - bytes0),
            streamBytesPerNodePerSecond: perNode(cluster.streamBytes.reduce(0, +) - streams0),
            healthChangeReachedAll: nil, crashSeenByAll: nil, crashSeenBy: 0, falseDeathsAtTenPercentLoss: 0)

        // A change in what one node routes around, published urgently.
        let changedAt = cluster.now
        cluster.publish(
            reporter, key: "health/node-\(reporter)", value: String(repeating: "x|y/default 1 0,9,0,0,0,0,0 -\n", count: 80),
            urgent: true)
        let key = "health/node-\(reporter)"
        let version = cluster.nodes[reporter].state[key]?.version ?? 0
        // Reached when every node holds that version or a newer one (the periodic publications go on meanwhile).
        if cluster.run(until: { $0.firstHeld(key, atLeast: version).count == size }, timeout: .seconds(30)) {
            report.healthChangeReachedAll = (cluster.firstHeld(key, atLeast: version).values.max() ?? changedAt) - changedAt
        }

        // A crash.
        let crashAt = cluster.now
        cluster.crashed.insert(victim)
        let id = "node-\(victim)"
        let seenByAll = cluster.run(until: { $0.deathSightings(of: id, since: crashAt).count == size - 1 }, timeout: .seconds(60))
        let sightings = cluster.deathSightings(of: id, since: crashAt)
        report.crashSeenBy = sightings.count
        if seenByAll { report.crashSeenByAll = (sightings.values.max() ?? crashAt) - crashAt }

        // 10 % loss for 20 s.
        cluster.network.loss = 0.1
        let lossAt = cluster.now
        cluster.run(for: .seconds(20))
        report.falseDeathsAtTenPercentLoss = cluster.falseDeaths(since: lossAt).count
        report.largestDatagram = cluster.largestDatagram
        report.oversizeDatagrams = cluster.oversizeDatagrams
        return report
    }

    /// Whether the figures meet the bounds the tests hold them to.
    public static func acceptable(_ report: Report) -> Bool {
        report.formed != nil && report.oversizeDatagrams == 0 && report.largestDatagram <= 1400
            && (report.healthChangeReachedAll.map { $0 < .seconds(5) } ?? false)
            && report.crashSeenBy == report.size - 1 && (report.crashSeenByAll.map { $0 < .seconds(20) } ?? false)
            && report.falseDeathsAtTenPercentLoss == 0
    }
}
