import Foundation
import NIOConcurrencyHelpers
import SignalboxCore

/// Endpoint health as this node routes by it: its own observations, plus the reports other nodes
/// gossip (`health/<node>`), merged.
///
/// The state is values (`HealthView`, `NodeHealthReport`); the tracker only guards them and keeps
/// the merged view ready, so a request's snapshot is a copy-on-write read. Times are Unix seconds,
/// so views from different nodes compare and merge.
public final class HealthTracker: Sendable {
    private struct State {
        var local = HealthView()
        var remote: [String: NodeHealthReport] = [:]
        var merged = HealthView()

        mutating func remerge(key: String, now: Double) {
            var health = local.endpoints[key] ?? EndpointHealth()
            for report in remote.values {
                if let summary = report.endpoints[key] { health.absorb(summary, reportedAt: report.at, now: now) }
            }
            merged.endpoints[key] = health
        }

        mutating func remergeAll(now: Double) {
            merged = local.merging(remote.values, now: now)
        }
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    public var now: Double { Date().timeIntervalSince1970 }

    /// The view requests plan with: this node's observations and every live node's reports.
    public func snapshot() -> HealthView { state.withLockedValue { $0.merged } }

    /// This node's own observations only (what it reports to the cluster).
    public func localReport() -> NodeHealthReport {
        let now = self.now
        return state.withLockedValue { $0.local.report(now: now) }
    }

    /// Another node's report; nil forgets the node (it died or left).
    public func absorb(node: String, report: NodeHealthReport?) {
        let now = self.now
        state.withLockedValue { state in
            state.remote[node] = report
            state.remergeAll(now: now)
        }
    }

    /// The latest report of every other node, by node id.
    public func remoteReports() -> [String: NodeHealthReport] { state.withLockedValue { $0.remote } }

    func recordSuccess(_ attempt: PlannedAttempt, firstTokenMillis: Int?, tokensPerSecond: Double?) {
        let now = self.now
        let key = HealthView.key(model: attempt.model.id, tag: attempt.endpoint.tag)
        state.withLockedValue { state in
            state.local.update(model: attempt.model.id, tag: attempt.endpoint.tag) {
                $0.recordSuccess(at: now, firstTokenMillis: firstTokenMillis, tokensPerSecond: tokensPerSecond)
            }
            state.remerge(key: key, now: now)
        }
    }

    func recordFailure(_ attempt: PlannedAttempt, rateLimited: Bool) {
        let now = self.now
        let key = HealthView.key(model: attempt.model.id, tag: attempt.endpoint.tag)
        state.withLockedValue { state in
            state.local.update(model: attempt.model.id, tag: attempt.endpoint.tag) { $0.recordFailure(at: now, rateLimited: rateLimited) }
            state.remerge(key: key, now: now)
        }
    }
}
