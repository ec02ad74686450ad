import Foundation
import Gossip
import GossipSimulation
import Testing

/// The simulations below run for seconds of CPU each, synchronously, on Swift concurrency's
/// cooperative threads (one per core). Run beside the other suites they took both threads of this
/// 2-core machine for ~15 s, and the timing-sensitive async tests beside them (1 s stall
/// watchdogs, TLS and idle deadlines, gossip over real UDP) stalled and failed. `Tests/run.sh`
/// runs this group on its own, after the rest (`--skip` / `--filter VirtualTimeClusters`).
@Suite enum VirtualTimeClusters {}

/// Whole clusters in virtual time. Each test prints the figures it measured (Docs/cluster.md
/// quotes them); the assertions are the bounds a user would notice.
extension VirtualTimeClusters {
    @Suite struct SimulationTests {
        func seconds(_ duration: Duration) -> String {
            let (s, attos) = duration.components
            return String(format: "%.2f s", Double(s) + Double(attos) / 1e18)
        }

        @Test(arguments: [5, 50, 200])
        func everyMemberSeesACrashWithinSeconds(size: Int) throws {
            var cluster = ClusterSimulation(size: size, seed: UInt64(size))
            let formation = cluster.formCluster()
            let formed = try #require(formation, "the cluster never formed")
            cluster.run(for: .seconds(2))
            let victim = size / 2
            let crashAt = cluster.now
            cluster.crashed.insert(victim)
            let id = cluster.nodes[victim].myself.id
            let sentBefore = cluster.messagesSent
            let everyone = cluster.run(until: { $0.deathSightings(of: id, since: crashAt).count == size - 1 }, timeout: .seconds(60))
            let sightings = cluster.deathSightings(of: id, since: crashAt).values.sorted()
            #expect(everyone)
            let first = sightings.first.map { $0 - crashAt } ?? .zero
            let last = sightings.last.map { $0 - crashAt } ?? .zero
            let perNodePerSecond =
                Double(cluster.messagesSent - sentBefore) / Double(size) / (Double((cluster.now - crashAt).components.seconds) + 1)
            print(
                "swim n=\(size): formed in \(seconds(formed)); crash seen dead first after \(seconds(first)), by all after \(seconds(last)); "
                    + "≈\(Int(perNodePerSecond)) messages/node/s; false deaths \(cluster.falseDeaths(since: .zero).count)")
            #expect(last < (size <= 5 ? .seconds(5) : .seconds(10)))
            #expect(cluster.falseDeaths(since: .zero).isEmpty)
        }

        @Test(arguments: [0.05, 0.15])
        func lossDoesNotKillHealthyMembers(loss: Double) throws {
            var cluster = ClusterSimulation(size: 100, network: .init(loss: loss), seed: 7)
            let formation = cluster.formCluster(timeout: .seconds(120))
            try #require(formation != nil, "the cluster never formed")
            let start = cluster.now
            cluster.run(for: .seconds(60))
            let falseDeaths = cluster.falseDeaths(since: start)
            print(
                "swim n=100, \(Int(loss * 100))% loss, 60 s: \(cluster.suspicions(since: start)) suspicions of healthy members (all refuted), "
                    + "\(falseDeaths.count) declared dead")
            #expect(falseDeaths.isEmpty)
        }

        @Test func slowMembersDoNotTakeHealthyOnesDown() throws {
            var cluster = ClusterSimulation(size: 100, network: .init(loss: 0.01, slowDelay: .milliseconds(400)), seed: 11)
            let formation = cluster.formCluster(timeout: .seconds(120))
            try #require(formation != nil, "the cluster never formed")
            cluster.slow = [3, 17, 42, 64, 88]
            let start = cluster.now
            cluster.run(for: .seconds(60))
            let slowIDs = Set(cluster.slow.map { cluster.nodes[$0].myself.id })
            let healthyDead = cluster.falseDeaths(since: start).filter { !slowIDs.contains($0) }
            let slowDead = cluster.falseDeaths(since: start).filter { slowIDs.contains($0) }
            let maxAwareness = cluster.slow.map { cluster.nodes[$0].awareness }.max() ?? 0
            print(
                "swim n=100 with 5 members 400 ms slow, 60 s: healthy declared dead \(healthyDead.count), slow declared dead "
                    + "\(slowDead.count), slow members' local health multiplier up to \(maxAwareness + 1)")
            #expect(healthyDead.isEmpty)
        }

        @Test func aStateChangeReachesEveryMemberQuickly() throws {
            var cluster = ClusterSimulation(size: 200, seed: 3)
            let formation = cluster.formCluster(timeout: .seconds(120))
            try #require(formation != nil, "the cluster never formed")
            cluster.run(for: .seconds(1))
            let start = cluster.now
            cluster.publish(17, key: "health/node-17", value: "openai:open")
            let key = cluster.nodes[17].state["health/node-17"].map { "\($0.key)@\($0.version)" } ?? ""
            let converged = cluster.run(until: { ($0.stateSeen[key]?.count ?? 0) == 200 }, timeout: .seconds(30))
            let times = (cluster.stateSeen[key] ?? [:]).values.map { $0 - start }.sorted()
            #expect(converged)
            let half = times.isEmpty ? .zero : times[times.count / 2]
            print("swim n=200: a state change reached half the members after \(seconds(half)), all after \(seconds(times.last ?? .zero))")
            #expect((times.last ?? .seconds(99)) < .seconds(3))
        }

        @Test func aMemberCutOffFromSomePeersButReachableThroughOthersIsNotDeclaredDead() throws {
            var cluster = ClusterSimulation(size: 12, network: .init(loss: 0.01), seed: 5)
            let formation = cluster.formCluster()
            try #require(formation != nil, "the cluster never formed")
            // node-5 cannot talk to nodes 0–3 (either way); the other seven reach both sides.
            for peer in 0...3 { cluster.cut.insert([peer, 5]) }
            let start = cluster.now
            cluster.run(for: .seconds(60))
            print(
                "swim n=12, node-5 cut off from 4 peers for 60 s: suspected \(cluster.suspicions(since: start)) times, "
                    + "declared dead \(cluster.falseDeaths(since: start).count) times")
            #expect(cluster.falseDeaths(since: start).isEmpty)
            #expect(cluster.nodes.allSatisfy { $0.liveCount == 12 })
        }

        @Test func anAsymmetricPartitionTakesNoOneDown() throws {
            var cluster = ClusterSimulation(size: 5, seed: 21)
            let formation = cluster.formCluster()
            try #require(formation != nil, "the cluster never formed")
            cluster.oneWay = [[1, 3], [1, 4]]  // node-1 cannot send to nodes 3 and 4; they still reach it
            let start = cluster.now
            cluster.run(for: .seconds(60))
            print(
                "swim n=5, node-1 unable to send to 2 peers for 60 s: suspected \(cluster.suspicions(since: start)) times, "
                    + "declared dead \(cluster.falseDeaths(since: start).count) times")
            #expect(cluster.falseDeaths(since: start).isEmpty)
        }

        @Test func aGracefulLeaveIsNeverSuspected() throws {
            var cluster = ClusterSimulation(size: 20, seed: 9)
            let formation = cluster.formCluster()
            try #require(formation != nil, "the cluster never formed")
            let start = cluster.now
            cluster.leave(4)
            let id = cluster.nodes[4].myself.id
            cluster.run(until: { $0.deathSightings(of: id, since: start).count == 20 }, timeout: .seconds(5))
            let seen = cluster.deathSightings(of: id, since: start).filter { $0.key != 4 }
            #expect(seen.count == 19)
            #expect(cluster.observations.filter { $0.member == id && $0.at >= start }.allSatisfy { $0.status == .left })
            print("swim n=20: a graceful leave was known to all after \(seconds((seen.values.max() ?? start) - start)), never suspected")
        }

        @Test func aRestartedMemberRejoinsUnderANewIncarnation() throws {
            var cluster = ClusterSimulation(size: 8, seed: 13)
            let formation = cluster.formCluster()
            try #require(formation != nil, "the cluster never formed")
            cluster.crashed.insert(6)
            let id = cluster.nodes[6].myself.id
            let crashAt = cluster.now
            cluster.run(until: { $0.deathSightings(of: id, since: crashAt).count == 7 }, timeout: .seconds(30))
            // Same id and address, booted later: its incarnation is its boot time.
            let old = cluster.nodes[6].myself
            cluster.nodes[6] = SwimNode(
                myself: Member(id: id, address: old.address, region: old.region, incarnation: 1_000_000),
                seed: 99)
            cluster.crashed.remove(6)
            let rejoinAt = cluster.now
            var restarted = cluster.nodes[6]
            let hello = restarted.join(seeds: [cluster.address(0)], now: cluster.now)
            cluster.nodes[6] = restarted
            cluster.resend(from: 6, hello)
            let back = cluster.run(
                until: { sim in (0..<8).filter { $0 != 6 }.allSatisfy { sim.nodes[$0].members[id]?.status == .alive } },
                timeout: .seconds(10))
            #expect(back)
            #expect((cluster.nodes[0].members[id]?.incarnation ?? 0) >= 1_000_000)
            print("swim n=8: a restarted member was alive again everywhere after \(seconds(cluster.now - rejoinAt))")
        }
    }

}

/// Many members, every datagram measured against the limit, health republished as in
/// production; and 200 node ids that come and go.
extension VirtualTimeClusters {
    @Suite struct ScaleTests {
        func seconds(_ duration: Duration) -> String {
            let (s, attos) = duration.components
            return String(format: "%.2f s", Double(s) + Double(attos) / 1e18)
        }

        /// At 50 members here (the debug build, beside the other suites); `gossip-sim` runs the same
        /// scenario at 1,000 in release.
        @Test func fiftyMembersKeepEveryDatagramUnderTheLimit() {
            let report = ScaleScenario(size: 50).run()
            print(report)
            #expect(report.oversizeDatagrams == 0 && report.largestDatagram <= 1400 && report.largestDatagram > 1200)
            #expect(report.healthChangeReachedAll.map { $0 < .seconds(5) } == true)
            #expect(report.crashSeenBy == 49 && report.crashSeenByAll.map { $0 < .seconds(10) } == true)
            #expect(report.falseDeathsAtTenPercentLoss == 0)
            #expect(ScaleScenario.acceptable(report))
        }

        @Test func twoHundredNodeIdsComingAndGoingLeaveBoundedState() throws {
            var settings = SwimSettings()
            settings.reapDeadAfter = .seconds(30)
            settings.reapLeftAfter = .seconds(30)
            let stable = 10, slots = 10
            var cluster = ClusterSimulation(size: stable + slots, settings: settings, seed: 200)
            let formation = cluster.formCluster()
            try #require(formation != nil, "the cluster never formed")
            var nextID = 0
            var largestView = 0, largestState = 0
            // Every 1.5 s one slot's node goes (crashed or left) and a new node id takes its address.
            while nextID < 200 {
                let slot = stable + nextID % slots
                let old = cluster.nodes[slot].myself
                if nextID % 2 == 0 { cluster.crashed.insert(slot) } else { cluster.leave(slot) }
                cluster.run(for: .milliseconds(500))
                var fresh = SwimNode(
                    myself: Member(id: "churn-\(nextID)", address: old.address, region: "eu", incarnation: 1), settings: settings,
                    seed: UInt64(nextID) + 7)
                let hello = fresh.join(seeds: [cluster.address(0)], now: cluster.now)
                cluster.nodes[slot] = fresh
                cluster.crashed.remove(slot)
                cluster.resend(from: slot, hello)
                cluster.publish(slot, key: "health/churn-\(nextID)", value: "h1\nm|p/default 0 1,0,0,0,0,0,0 -")
                cluster.publish(slot, key: "rate/churn-\(nextID)/account-\(nextID % 7)", value: "1:1:1:1")
                cluster.run(for: .seconds(1))
                largestView = max(largestView, cluster.nodes[0].members.count)
                largestState = max(largestState, cluster.nodes[0].state.count)
                nextID += 1
            }
            cluster.run(for: .seconds(40))
            let finalView = cluster.nodes[0].members.count, finalState = cluster.nodes[0].state.count
            print(
                "swim churn: 200 node ids came and went through \(slots) addresses; node-0 knew at most \(largestView) members and "
                    + "\(largestState) state entries, and \(finalView) members, \(finalState) entries after the reaping time")
            // Bounded by what lives within the reaping time (30 s ≈ 20 ids), not by all 200.
            #expect(largestView < stable + slots + 45)
            #expect(finalView == stable + slots - 1)
            #expect(finalState <= 2 * slots + 5)
        }
    }
}
