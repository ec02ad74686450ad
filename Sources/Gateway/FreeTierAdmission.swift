import Foundation
import NIOConcurrencyHelpers
import SignalboxCore

/// A single node's free-tier counts: admitted requests per account in the current minute and
/// UTC day, checked and counted in one step so concurrent requests never exceed the limit.
/// Seeded from the ledger the first time an account is seen, so a restart does not reset them.
final class FreeTierAdmission: Sendable {
    private struct State {
        var counters = FreeTierCounters()
        var seeded: Set<String> = []
    }

    private let state = NIOLockedValueBox(State())

    func isSeeded(_ account: String) -> Bool { state.withLockedValue { $0.seeded.contains(account) } }

    /// The account's counts as the ledger recorded them (requests that settled before this node
    /// started, or on a node that shared its ledger); the higher of these and the node's own wins.
    func seed(_ account: String, minute: Int, day: Int, now: Double) {
        state.withLockedValue { state in
            guard state.seeded.insert(account).inserted else { return }
            state.counters.resume(
                account: account,
                counts: FreeTierCounters.Counts(
                    minute: Int64(now / 60), inMinute: minute, day: Int64(now / 86_400), inDay: day))
        }
    }

    /// Admits and counts a request, or says which limit it hit.
    func admit(account: String, dailyLimit: Int, now: Double) -> (limit: Int, used: Int, perMinute: Bool)? {
        state.withLockedValue { state in
            let used = state.counters.used(account: account, now: now)
            if used.minute >= FreeTier.requestsPerMinute { return (FreeTier.requestsPerMinute, used.minute, true) }
            if used.day >= dailyLimit { return (dailyLimit, used.day, false) }
            _ = state.counters.admit(account: account, now: now)
            return nil
        }
    }
}
