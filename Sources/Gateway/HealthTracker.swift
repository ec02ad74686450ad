import Foundation
import NIOConcurrencyHelpers
import SignalboxCore

/// Endpoint health as this node routes by it: its own observations, plus the reports other nodes
/// gossip (`health/<node>`), merged.
///
/// The state is values (`HealthView`, `NodeHealthReport`); the tracker only guards them and keeps
/// the merged view ready, so a request's snapshot is a copy-on-write read under a lock held for
/// a pointer copy. Absorbing a report sums every fresh report outside that lock and swaps the
/// result in; a request's own outcome re-merges one endpoint.
///
/// Times are Unix seconds on this node's clock. Other nodes' reports are dated by the age gossip
/// carries with them, never by the reporter's clock, and count for `reportLifetime` seconds.
public final class HealthTracker: Sendable {
    private struct State {
        var local = HealthView()
        var localVersion: UInt64 = 0
        var remote: [String: NodeHealthReport] = [:]
        var aggregate: [String: EndpointHealth] = [:]
        var merged = HealthView()

        mutating func remerge(key: String) {
            merged.endpoints[key] = (local.endpoints[key] ?? EndpointHealth()).merged(with: aggregate[key])
        }
    }

    /// How long another node's report counts after it was made (it republishes every 10 s).
    public let reportLifetime: Double
    private let state = NIOLockedValueBox(State())
    /// Serialises rebuilds (gossip and the upkeep timer), so the heavy part runs outside `state`'s lock.
    private let rebuilding = NIOLock()

    public init(reportLifetime: Double = 30) {
        self.reportLifetime = reportLifetime
    }

    public var now: Double { Date().timeIntervalSince1970 }

    /// The view requests plan with: this node's observations and every live node's fresh reports.
    public func snapshot() -> HealthView { state.withLockedValue { $0.merged } }

    /// This node's own observations only (what it reports to the cluster).
    public func localReport() -> NodeHealthReport {
        let now = self.now
        return state.withLockedValue { $0.local }.report(now: now)
    }

    /// Another node's report; nil forgets the node (it died, left or its report expired).
    public func absorb(node: String, report: NodeHealthReport?) {
        rebuild { $0[node] = report }
    }

    /// Drops reports that outlived `reportLifetime` and re-dates the others' counts; run every second.
    public func expireReports() {
        let cutoff = now - reportLifetime
        rebuild { reports in reports = reports.filter { $0.value.at > cutoff } }
    }

    private func rebuild(_ change: (inout [String: NodeHealthReport]) -> Void) {
        rebuilding.withLock {
            let reports = state.withLockedValue { state in
                change(&state.remote)
                return state.remote
            }
            let now = self.now
            let aggregate = HealthView.aggregate(reports.values, lifetime: reportLifetime, now: now)
            var (local, version) = state.withLockedValue { ($0.local, $0.localVersion) }
            var merged = local.merging(aggregate)
            state.withLockedValue { state in
                if state.localVersion != version {
                    // A request recorded an outcome meanwhile: merge again from the newer local view (rare).
                    (local, version) = (state.local, state.localVersion)
                    merged = local.merging(aggregate)
                }
                state.aggregate = aggregate
                state.merged = merged
            }
        }
    }

    /// The latest fresh report of every other node, by node id.
    public func remoteReports() -> [String: NodeHealthReport] {
        let cutoff = now - reportLifetime
        return state.withLockedValue { $0.remote }.filter { $0.value.at > cutoff }
    }

    func recordSuccess(_ attempt: PlannedAttempt, firstTokenMillis: Int?, tokensPerSecond: Double?) {
        let now = self.now
        let key = HealthView.key(model: attempt.model.id, tag: attempt.endpoint.tag)
        state.withLockedValue { state in
            state.local.update(model: attempt.model.id, tag: attempt.endpoint.tag) {
                $0.recordSuccess(at: now, firstTokenMillis: firstTokenMillis, tokensPerSecond: tokensPerSecond)
            }
            state.localVersion += 1
            state.remerge(key: key)
        }
    }

    func recordFailure(_ attempt: PlannedAttempt, rateLimited: Bool) {
        let now = self.now
        let key = HealthView.key(model: attempt.model.id, tag: attempt.endpoint.tag)
        state.withLockedValue { state in
            state.local.update(model: attempt.model.id, tag: attempt.endpoint.tag) { $0.recordFailure(at: now, rateLimited: rateLimited) }
            state.localVersion += 1
            state.remerge(key: key)
        }
    }
}
