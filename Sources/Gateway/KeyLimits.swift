import Foundation
import Ledger
import NIOConcurrencyHelpers
import SignalboxCore

/// Spending limits of keys, enforced without a ledger read per request and without letting
/// concurrent requests on one node overshoot.
///
/// A key's spend in its limit window is read from the ledger at most once a second; on top of it
/// the node adds what it charged through the key since that read and the worst cases of the key's
/// requests in flight. A request is admitted only if its worst case fits what is left, checked and
/// reserved in one step. Other nodes' in-flight requests are seen once charged (within a second).
final class KeyLimits: Sendable {
    private struct Entry {
        var usage = KeyUsage()
        var fetchedAt = Date.distantPast
        /// Charged through the key on this node since `usage` was read.
        var chargedSince = Money.zero
        var inFlight = Money.zero
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    let freshness: TimeInterval

    init(freshness: TimeInterval = 1) { self.freshness = freshness }

    func needsRefresh(_ keyID: String, now: Date) -> Bool {
        entries.withLockedValue { now.timeIntervalSince($0[keyID]?.fetchedAt ?? .distantPast) >= freshness }
    }

    /// A fresh read of the key's spend from the ledger.
    func refreshed(_ keyID: String, usage: KeyUsage, at now: Date) {
        entries.withLockedValue { entries in
            var entry = entries[keyID] ?? Entry()
            entry.usage = usage
            entry.fetchedAt = now
            entry.chargedSince = .zero
            entries[keyID] = entry
        }
    }

    /// What the key may still spend, counting requests in flight on this node.
    func remaining(_ key: KeyRecord) -> Money? {
        guard let limit = key.limit else { return nil }
        return entries.withLockedValue { Self.left(in: $0[key.id] ?? Entry(), key: key, limit: limit) }
    }

    /// Reserves `amount` against the key's limit if it fits; otherwise returns what is left.
    func reserve(_ key: KeyRecord, amount: Money) -> Money? {
        guard let limit = key.limit else { return nil }
        return entries.withLockedValue { entries in
            var entry = entries[key.id] ?? Entry()
            let left = Self.left(in: entry, key: key, limit: limit)
            guard amount <= left else { return max(.zero, left) }
            entry.inFlight += amount
            entries[key.id] = entry
            return nil
        }
    }

    private static func left(in entry: Entry, key: KeyRecord, limit: Money) -> Money {
        limit - entry.usage.spent(resetting: key.limitReset) - entry.chargedSince - entry.inFlight
    }

    /// Ends a reservation: `charged` now counts as spent.
    func release(_ keyID: String, reserved: Money, charged: Money) {
        entries.withLockedValue { entries in
            guard var entry = entries[keyID] else { return }
            entry.inFlight -= reserved
            entry.chargedSince += charged
            entries[keyID] = entry
        }
    }
}
