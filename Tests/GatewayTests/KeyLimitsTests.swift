import Foundation
@testable import Gateway
import Ledger
import SignalboxCore
import Testing

/// The node-local half of key limits, step by step: a charge counts from settlement until a
/// ledger read is sure to include it, and one read runs at a time.
@Suite struct KeyLimitsTests {
    let key = KeyRecord(id: "k", accountID: "a", hash: "h", label: "l", name: "n", limit: Money(dollars: 1))

    @Test func aChargeNotYetInTheLedgerSurvivesAUsageRefresh() {
        let limits = KeyLimits(freshness: 0)
        let now = Date()
        #expect(limits.beginRefresh("k", now: now, spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(), at: now)
        #expect(limits.reserve(key, amount: Money(decimal: "0.6")!) == nil)
        limits.settle("k", reserved: Money(decimal: "0.6")!, charged: Money(decimal: "0.5")!)
        // A read that ran before the charge was committed does not see it: it still counts.
        #expect(limits.beginRefresh("k", now: now.addingTimeInterval(1), spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(), at: now.addingTimeInterval(1))
        #expect(limits.remaining(key) == Money(decimal: "0.5"))
        // Committed while a read runs: counted twice until the next read, never zero times.
        #expect(limits.beginRefresh("k", now: now.addingTimeInterval(2), spoolReplayed: true))
        limits.committed("k", charged: Money(decimal: "0.5")!)
        limits.refreshed("k", usage: KeyUsage(total: Money(decimal: "0.5")!), at: now.addingTimeInterval(2))
        #expect(limits.remaining(key) == Money.zero)
        #expect(limits.beginRefresh("k", now: now.addingTimeInterval(3), spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(total: Money(decimal: "0.5")!), at: now.addingTimeInterval(3))
        #expect(limits.remaining(key) == Money(decimal: "0.5"))
    }

    @Test func aSpooledChargeCountsUntilTheSpoolIsReplayed() {
        let limits = KeyLimits(freshness: 0)
        let now = Date()
        #expect(limits.beginRefresh("k", now: now, spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(), at: now)
        _ = limits.reserve(key, amount: Money(decimal: "0.4")!)
        limits.settle("k", reserved: Money(decimal: "0.4")!, charged: Money(decimal: "0.4")!)
        limits.spooled("k", charged: Money(decimal: "0.4")!)
        #expect(limits.beginRefresh("k", now: now.addingTimeInterval(1), spoolReplayed: false))
        limits.refreshed("k", usage: KeyUsage(), at: now.addingTimeInterval(1))
        #expect(limits.remaining(key) == Money(decimal: "0.6"))
        #expect(limits.beginRefresh("k", now: now.addingTimeInterval(2), spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(total: Money(decimal: "0.4")!), at: now.addingTimeInterval(2))
        #expect(limits.remaining(key) == Money(decimal: "0.6"))
    }

    @Test func oneReadAtATime() {
        let limits = KeyLimits(freshness: 1)
        let now = Date()
        #expect(limits.beginRefresh("k", now: now, spoolReplayed: true))
        #expect(!limits.beginRefresh("k", now: now, spoolReplayed: true))  // single flight
        limits.refreshFailed("k")
        #expect(limits.beginRefresh("k", now: now, spoolReplayed: true))
        limits.refreshed("k", usage: KeyUsage(), at: now)
        #expect(!limits.beginRefresh("k", now: now.addingTimeInterval(0.5), spoolReplayed: true))  // still fresh
    }
}
