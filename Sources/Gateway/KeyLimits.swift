import Foundation
import Ledger
import NIOConcurrencyHelpers
import SignalboxCore

/// Spending limits of keys, enforced without a ledger read per request and without letting
/// concurrent requests on one node overshoot.
///
/// A key's spend in its limit window is read from the ledger at most once a second, by one
/// request at a time; on top of it the node adds what it charged through the key and the worst
/// cases of the key's requests in flight. A request is admitted only if its worst case fits what
/// is left, checked and reserved in one step, so on one node a key never spends beyond its limit.
///
/// A charge counts from the moment its request settles until a ledger read is sure to include
/// it: charges still on their way to the ledger (queued, spooled) are `pending`, and charges
/// committed while a read ran are counted twice until the next read rather than not at all.
/// Other nodes' spending is seen once committed (within a second): the cross-node overshoot is
/// at most what the key's requests on the other nodes reserve in that second (Docs/ledger.md).
final class KeyLimits: Sendable {
    private struct Entry {
        var usage = KeyUsage()
        var fetchedAt = Date.distantPast
        /// A read is running (single flight): since when, and `committedTotal` when it started.
        var refreshStartedAt: Date?
        var refreshBaseline: Money = .zero
        /// `committedTotal` when `usage` was read: charges committed since are on top of it.
        var baseline = Money.zero
        /// Every charge through the key this node committed to the ledger, ever (monotonic).
        var committedTotal = Money.zero
        /// Charged but not committed yet (queued, spooled, held): not in any ledger read.
        var pending = Money.zero
        /// The part of `pending` that went to the spool (or memory): committed once the spool is replayed.
        var offline = Money.zero
        var inFlight = Money.zero
    }

    private let entries = NIOLockedValueBox<[String: Entry]>([:])
    let freshness: TimeInterval
    /// A read that has not answered after this long no longer stops another.
    let refreshTimeout: TimeInterval = 5

    init(freshness: TimeInterval = 1) { self.freshness = freshness }

    /// Whether this caller should read the key's spend from the ledger now. At most one caller
    /// at a time gets true; it must call `refreshed` or `refreshFailed` afterwards.
    /// `spoolReplayed`: nothing waits in the node's spool, so spooled charges are in the ledger.
    func beginRefresh(_ keyID: String, now: Date, spoolReplayed: Bool) -> Bool {
        entries.withLockedValue { entries in
            var entry = entries[keyID] ?? Entry()
            guard now.timeIntervalSince(entry.fetchedAt) >= freshness else { return false }
            if let started = entry.refreshStartedAt, now.timeIntervalSince(started) < refreshTimeout { return false }
            if spoolReplayed {
                entry.pending -= entry.offline
                entry.committedTotal += entry.offline
                entry.offline = .zero
            }
            entry.refreshStartedAt = now
            entry.refreshBaseline = entry.committedTotal
            entries[keyID] = entry
            return true
        }
    }

    /// A fresh read of the key's spend from the ledger (started at `beginRefresh`).
    func refreshed(_ keyID: String, usage: KeyUsage, at now: Date) {
        entries.withLockedValue { entries in
            var entry = entries[keyID] ?? Entry()
            entry.usage = usage
            entry.fetchedAt = now
            // Charges committed before the read started are in it; later ones stay on top.
            entry.baseline = entry.refreshBaseline
            entry.refreshStartedAt = nil
            entries[keyID] = entry
        }
    }

    func refreshFailed(_ keyID: String) {
        entries.withLockedValue { $0[keyID]?.refreshStartedAt = nil }
    }

    /// Whether the key's spend was ever read on this node.
    func hasUsage(_ keyID: String) -> Bool {
        entries.withLockedValue { $0[keyID].map { $0.fetchedAt != .distantPast } ?? false }
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
        limit - entry.usage.spent(resetting: key.limitReset) - (entry.committedTotal - entry.baseline) - entry.pending - entry.inFlight
    }

    /// Settles a request's key reservation: `charged` now counts as spent, pending until it is
    /// committed (zero for a request that never ran).
    func settle(_ keyID: String, reserved: Money, charged: Money) {
        entries.withLockedValue { entries in
            guard var entry = entries[keyID] else { return }
            entry.inFlight -= reserved
            entry.pending += charged
            entries[keyID] = entry
        }
    }

    /// A settled charge went to the spool (the ledger was down): it stays pending until the
    /// spool is replayed.
    func spooled(_ keyID: String, charged: Money) {
        guard charged > .zero else { return }
        entries.withLockedValue { $0[keyID]?.offline += charged }
    }

    /// A settled charge reached the ledger: the next read includes it.
    func committed(_ keyID: String, charged: Money) {
        guard charged > .zero else { return }
        entries.withLockedValue { entries in
            guard var entry = entries[keyID] else { return }
            entry.pending -= charged
            entry.committedTotal += charged
            entries[keyID] = entry
        }
    }
}
