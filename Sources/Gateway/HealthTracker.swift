import Foundation
import NIOConcurrencyHelpers
import SignalboxCore

/// This node's view of endpoint health, shared by every request.
///
/// The state is a value (`HealthView`); the tracker only guards it. Requests read a snapshot to
/// plan and record each attempt's outcome. Times are Unix seconds, so views from different nodes
/// can later be compared and merged.
public final class HealthTracker: Sendable {
    private let view = NIOLockedValueBox(HealthView())

    public init() {}

    public var now: Double { Date().timeIntervalSince1970 }

    public func snapshot() -> HealthView { view.withLockedValue { $0 } }

    func recordSuccess(_ attempt: PlannedAttempt, firstTokenMillis: Int?, tokensPerSecond: Double?) {
        let now = self.now
        view.withLockedValue { view in
            view.update(model: attempt.model.id, tag: attempt.endpoint.tag) {
                $0.recordSuccess(at: now, firstTokenMillis: firstTokenMillis, tokensPerSecond: tokensPerSecond)
            }
        }
    }

    func recordFailure(_ attempt: PlannedAttempt, rateLimited: Bool) {
        let now = self.now
        view.withLockedValue { view in
            view.update(model: attempt.model.id, tag: attempt.endpoint.tag) { $0.recordFailure(at: now, rateLimited: rateLimited) }
        }
    }
}
