import Foundation
import SignalboxCore
import Testing

@Suite struct ClusterStateTests {
    @Test func freeTierCountersAddEveryNodesCountsForTheCurrentWindowsOnly() {
        var counters = FreeTierCounters()
        let now = 1_800_000_030.0  // 30 s into a minute
        for _ in 0..<3 { _ = counters.admit(account: "a", now: now) }
        let (minute, day) = (Int64(now / 60), Int64(now / 86_400))
        counters.absorb(node: "n2", account: "a", counts: .init(minute: minute, inMinute: 5, day: day, inDay: 9))
        counters.absorb(node: "n3", account: "a", counts: .init(minute: minute - 1, inMinute: 7, day: day, inDay: 7))  // last minute
        #expect(counters.used(account: "a", now: now) == (minute: 8, day: 19))
        #expect(counters.used(account: "b", now: now) == (minute: 0, day: 0))
        // the next minute starts from zero here, while the day keeps counting
        let next = counters.admit(account: "a", now: now + 60)
        #expect(next == .init(minute: minute + 1, inMinute: 1, day: day, inDay: 4))
        #expect(FreeTierCounters.Counts(text: next.text) == next)
        #expect(FreeTierCounters.Counts(text: "1:2:3") == nil)
        counters.forgetEnded(now: now + 86_400)
        #expect(counters.used(account: "a", now: now + 86_400) == (minute: 0, day: 0))
    }

    @Test func aRestartedNodeResumesFromTheCountTheClusterHoldsForIt() {
        let now = 1_800_000_030.0
        let (minute, day) = (Int64(now / 60), Int64(now / 86_400))
        var restarted = FreeTierCounters()
        _ = restarted.admit(account: "a", now: now)  // one request since the restart
        // Its previous life's entry, still gossiped: 12 this minute, 40 today.
        restarted.resume(account: "a", counts: .init(minute: minute, inMinute: 12, day: day, inDay: 40))
        #expect(restarted.used(account: "a", now: now) == (minute: 12, day: 40))
        #expect(restarted.admit(account: "a", now: now) == .init(minute: minute, inMinute: 13, day: day, inDay: 41))
        // an older window from the previous life does not lower what it counts now
        restarted.resume(account: "a", counts: .init(minute: minute - 5, inMinute: 19, day: day - 1, inDay: 900))
        #expect(restarted.used(account: "a", now: now) == (minute: 13, day: 41))
        // a node reaped from the cluster stops counting
        restarted.absorb(node: "gone", account: "a", counts: .init(minute: minute, inMinute: 3, day: day, inDay: 3))
        restarted.forget(node: "gone", account: "a")
        #expect(restarted.used(account: "a", now: now) == (minute: 13, day: 41))
    }

    @Test func aRegionTableFiltersAndReordersPlannedEndpoints() throws {
        let catalog = try Catalog.shipped()
        let planner = RoutingPlanner(catalog: catalog, loadBalancing: .catalogOrder)
        let request = try ChatRequest(json: ["model": "openai/gpt-4o-mini", "messages": [["role": "user", "content": "hi"]]])
        let planned = try planner.plan(request)
        #expect(planned.map(\.provider.slug).prefix(2) == ["openai", "azure"])
        let table = RegionRoutingTable(allowed: ["azure", "openai"], preferred: ["azure"])
        #expect(table.apply(to: planned, explicitOrder: false).map(\.provider.slug) == ["azure", "openai"])
        #expect(table.apply(to: planned, explicitOrder: true).map(\.provider.slug) == ["openai", "azure"])
        #expect(RegionRoutingTable(allowed: ["groq"]).apply(to: planned, explicitOrder: false).isEmpty)
        #expect(RegionRoutingTable().apply(to: planned, explicitOrder: false) == planned)
    }

    @Test func anotherNodesReportDemotesWhatItRoutesAround() throws {
        let now = 1_800_000_000.0
        var failing = HealthView()
        failing.update(model: "m", tag: "p/default") { $0.recordFailure(at: now - 1, rateLimited: false) }
        failing.update(model: "m", tag: "q/default") { $0.recordSuccess(at: now - 1, firstTokenMillis: 200, tokensPerSecond: 50) }
        let report = failing.report(now: now)
        #expect(report.degradedKeys == ["m|p/default"])
        var healthy = HealthView()
        healthy.update(model: "m", tag: "p/default") { $0.recordSuccess(at: now - 2, firstTokenMillis: 100, tokensPerSecond: 40) }
        #expect(healthy.health(model: "m", tag: "p/default")?.isDegraded(at: now) == false)
        let wire = NodeHealthReport(text: report.text, at: now)
        #expect(wire == report)  // the compact text carries everything but the date
        let merged = healthy.merging(HealthView.aggregate([try #require(wire)], lifetime: 30, now: now))
        #expect(merged.health(model: "m", tag: "p/default")?.isDegraded(at: now) == true)
        #expect(merged.health(model: "m", tag: "p/default")?.uptime(lastSeconds: 300, now: now) == 50)  // 1 of 2 cluster-wide
        #expect(merged.health(model: "m", tag: "q/default")?.meanFirstTokenMillis(lastSeconds: 300, now: now) == 200)
        // 30 s later, without a fresher report, the demotion is over
        #expect(merged.health(model: "m", tag: "p/default")?.isDegraded(at: now + 31) == false)
        // and a report already past its lifetime (its node went quiet) counts for nothing
        let stale = healthy.merging(
            HealthView.aggregate([NodeHealthReport(at: now - 31, endpoints: report.endpoints)], lifetime: 30, now: now))
        #expect(stale.health(model: "m", tag: "p/default")?.isDegraded(at: now) == false)
        #expect(stale.health(model: "m", tag: "p/default")?.uptime(lastSeconds: 300, now: now) == 100)
    }
}
