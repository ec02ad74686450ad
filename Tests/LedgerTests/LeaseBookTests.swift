import Foundation
import Ledger
import SignalboxCore
import Testing

@Suite struct LeaseBookTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let policy = LeasePolicy(slice: Money(dollars: 1), sliceMultiple: 8, shareDivisor: 4, ttl: 600, idleRelease: 10)

    @Test func aRequestWithoutALeaseAsksForASliceAndLaterOnesAreServedLocally() {
        var book = LeaseBook(nodeID: "n1", policy: policy)
        #expect(book.reserve(account: "a", amount: usd("0.2"), now: start) == nil)
        let request = book.growthRequest(account: "a", amount: usd("0.2"), now: start)
        #expect(request.minimum == usd("0.2"))
        #expect(request.desired == usd("1.6"))  // 8 × the reservation, more than the $1 slice
        #expect(request.shareDivisor == 4)
        book.apply(.granted(added: usd("1.6"), total: usd("1.6")), to: request, requestedAt: start)
        let reservations = (0..<8).compactMap { _ in book.reserve(account: "a", amount: usd("0.2"), now: start) }
        #expect(reservations.count == 8)
        #expect(book.reserve(account: "a", amount: usd("0.2"), now: start) == nil)
        // a cheap answer gives most of its reservation back to the lease
        #expect(book.settle(reservations[0], charged: usd("0.01"), now: start) == .lease(id: request.id, release: usd("0.01")))
        #expect(book.free(account: "a") == usd("0.19"))
    }

    @Test func aTightLeaseGivesBackWhatItDoesNotUseAfterEachRequest() {
        var book = LeaseBook(nodeID: "n1", policy: policy)
        let request = book.growthRequest(account: "a", amount: usd("0.2"), now: start)
        // the account is running low: only a quarter of what it has
        book.apply(.granted(added: usd("0.3"), total: usd("0.3")), to: request, requestedAt: start)
        let reserved = book.reserve(account: "a", amount: usd("0.2"), now: start)
        let first = try! #require(reserved)
        #expect(book.reserve(account: "a", amount: usd("0.2"), now: start) == nil)
        #expect(book.settle(first, charged: usd("0.05"), now: start) == .lease(id: request.id, release: usd("0.3")))
        #expect(book.free(account: "a") == .zero)
    }

    @Test func aRefusedGrowthMarksTheLeaseTightAndAClosedLeaseIsReplaced() {
        var book = LeaseBook(nodeID: "n1", policy: policy)
        let request = book.growthRequest(account: "a", amount: usd("0.2"), now: start)
        book.apply(.closed, to: request, requestedAt: start)
        let next = book.growthRequest(account: "a", amount: usd("0.2"), now: start)
        #expect(next.id != request.id)
        book.apply(.insufficient(available: usd("0.1")), to: next, requestedAt: start)
        #expect(book.leases["a"]?.tight == true)
    }

    @Test func leasesAreRenewedWhileInUseAndGivenBackWhenIdle() throws {
        var book = LeaseBook(nodeID: "n1", policy: policy)
        for account in ["busy", "idle"] {
            let request = book.growthRequest(account: account, amount: usd("0.1"), now: start)
            book.apply(.granted(added: usd("1"), total: usd("1")), to: request, requestedAt: start)
        }
        let idleLease = try #require(book.leases["idle"]?.id)
        let reserved = book.reserve(account: "busy", amount: usd("0.1"), now: start)
        let held = try #require(reserved)
        #expect(book.upkeep(now: start.addingTimeInterval(5)).isEmpty)
        let later = start.addingTimeInterval(400)  // past half the 600 s lifetime
        let work = book.upkeep(now: later)
        #expect(
            work == [
                .renew(leaseID: held.leaseID, account: "busy", expiresAt: later.addingTimeInterval(600)),
                .close(leaseID: idleLease, account: "idle"),
            ])
        #expect(book.leases["idle"] == nil)
        // a lease in its last tenth is not used, so the ledger cannot void it under a request
        #expect(book.reserve(account: "busy", amount: usd("0.1"), now: start.addingTimeInterval(545)) == nil)
        book.renewed(leaseID: held.leaseID, account: "busy", expiresAt: later.addingTimeInterval(600))
        let renewedReservation = book.reserve(account: "busy", amount: usd("0.1"), now: start.addingTimeInterval(545))
        let second = try #require(renewedReservation)
        // at shutdown, everything not reserved goes back
        _ = book.settle(held, charged: usd("0.1"), now: later)
        #expect(book.upkeep(now: later, closingAll: true).isEmpty)  // one request still runs
        _ = book.settle(second, charged: usd("0.1"), now: later)
        #expect(book.upkeep(now: later, closingAll: true, mayClose: false).isEmpty)  // charges still in the spool
        #expect(book.upkeep(now: later, closingAll: true).isEmpty)  // two settlements on their way to the ledger
        book.committed(held, release: usd("0.1"))
        #expect(book.upkeep(now: later, closingAll: true).isEmpty)
        book.committed(second, release: usd("0.1"))
        #expect(book.upkeep(now: later, closingAll: true) == [.close(leaseID: held.leaseID, account: "busy")])
    }

    @Test func aGrowthThatLandedAfterItsDeadlineIsTakenBackIntoTheBook() throws {
        var book = LeaseBook(nodeID: "n1", policy: policy)
        let request = book.growthRequest(account: "a", amount: usd("0.2"), now: start)
        book.apply(.granted(added: usd("2"), total: usd("2")), to: request, requestedAt: start)
        let reservation = book.reserve(account: "a", amount: usd("0.2"), now: start)
        let reserved = try #require(reservation)
        _ = book.settle(reserved, charged: usd("0.2"), now: start)  // releases 0.2, not yet committed
        // A second growth of 0.5 timed out here but landed in the ledger: it holds 2 + 0.5 (the 0.2 release is on its way).
        let timedOut = book.growthRequest(account: "a", amount: usd("2"), now: start)
        book.growthUncertain(account: "a", leaseID: timedOut.id)
        let work = book.upkeep(now: start.addingTimeInterval(1))
        #expect(work.contains { if case .renew = $0 { true } else { false } })  // renewed at once to find out
        let revision = try #require(book.leases["a"]?.revision)
        book.reconcile(leaseID: timedOut.id, account: "a", ledgerAmount: usd("2.5"), revision: revision + 1)  // read across a commit
        #expect(book.free(account: "a") == usd("1.8"))
        book.reconcile(leaseID: timedOut.id, account: "a", ledgerAmount: usd("2.5"), revision: revision)
        #expect(book.free(account: "a") == usd("2.3"))
        #expect(book.leases["a"]?.uncertain == false)
    }
}
