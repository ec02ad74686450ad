import Foundation
import Ledger
import Logging
import SignalboxCore
import SignalboxTestKit
import Testing

@Suite struct SettlementCommitterTests {
    func settlement(_ id: String, lease: String, _ amount: String) -> Settlement {
        Settlement(reservation: .lease(id: lease, release: usd(amount)), transfers: [charge(id, account: "acct", amount)],
                   generation: generation(id, account: "acct", cost: usd(amount)))
    }

    func spoolPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)/settlements.spool").path
    }

    @Test func concurrentSettlementsAreCommittedInFewerTransactions() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "10")
        _ = try await store.growLease(LeaseRequest(id: "lease", account: "acct", minimum: usd("5"), desired: usd("5"), shareDivisor: 1,
                                                   ttl: 600))
        let committer = SettlementCommitter(store: store, spool: nil, logger: Logger(label: "test"))
        await withTaskGroup(of: SettlementCommitter.Receipt.self) { group in
            for index in 0..<200 { group.addTask { await committer.submit(self.settlement("g\(index)", lease: "lease", "0.01")) } }
            for await receipt in group { #expect(receipt == .committed) }
        }
        let status = await committer.currentStatus
        #expect(status.committedSettlements == 200)
        #expect(status.committedBatches < 200)
        #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("8"), available: usd("5")))
        #expect(try await store.verify().isConsistent)
    }

    @Test func aLeaseTheLedgerClosedIsDroppedByItsOwnerAtTheNextSettlement() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "10")
        let committer = SettlementCommitter(store: store, spool: nil, logger: Logger(label: "test"))
        let credit = CreditLeases(store: store, committer: committer, nodeID: "n1", logger: Logger(label: "test"))
        guard case .reserved(let first) = try await credit.reserve(account: "acct", amount: usd("0.1")) else {
            Issue.record("no reservation"); return
        }
        // Another node voids the lease (its TTL ran out by the ledger's clock while this node was paused).
        _ = try await store.shrinkLease(id: first.leaseID, by: .zero, ttl: 0, close: true)
        await credit.settle(first, charged: usd("0.1"), transfers: [charge("g1", account: "acct", "0.1")],
                            generation: generation("g1", account: "acct", cost: usd("0.1")), idempotency: nil)
        guard case .reserved(let second) = try await credit.reserve(account: "acct", amount: usd("0.1")) else {
            Issue.record("no reservation"); return
        }
        #expect(second.leaseID != first.leaseID)
        #expect(try await store.holdStatus(id: second.leaseID) == .pending)
        #expect(try await store.verify().isConsistent)
    }

    @Test func whileTheLedgerIsDownSettlementsAreSpooledThenReplayedExactlyOnce() async throws {
        let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
        try await ledger.createAccount(id: "acct", name: "A")
        try await grant(ledger, "acct", "10")
        _ = try await ledger.growLease(LeaseRequest(id: "lease", account: "acct", minimum: usd("5"), desired: usd("5"), shareDivisor: 1,
                                                    ttl: 600))
        let path = spoolPath()
        let committer = SettlementCommitter(store: ledger, spool: try SettlementSpool(path: path), timeout: .seconds(1),
                                            replayInterval: .milliseconds(50), logger: Logger(label: "test"))
        #expect(await committer.submit(settlement("before", lease: "lease", "0.5")) == .committed)
        ledger.isDown = true
        for index in 0..<10 { #expect(await committer.submit(settlement("down\(index)", lease: "lease", "0.1")) == .spooled) }
        #expect(await committer.currentStatus.ledgerReachable == false)
        #expect(await committer.currentStatus.spooled == 10)
        // The spool is on disk: a node started after a crash finds the same settlements.
        #expect(try await SettlementSpool(path: path).pending().count == 10)
        // A replay of the first few landed before a crash: replaying them again must not double them.
        ledger.isDown = false
        try await ledger.settle(Array(try await SettlementSpool(path: path).pending().prefix(3)))
        for _ in 0..<100 where await committer.currentStatus.spooled > 0 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(await committer.currentStatus.spooled == 0)
        #expect(try await SettlementSpool(path: path).pending().isEmpty)
        #expect(try await ledger.creditTotals(account: "acct").usage == usd("1.5"))
        #expect(try await ledger.balance(account: "acct") == AccountBalance(balance: usd("8.5"), available: usd("5")))
        #expect(try await ledger.verify().isConsistent)
    }

    @Test func aSettlementTheLedgerRefusesDoesNotHoldBackTheOthers() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "10")
        let path = spoolPath()
        let committer = SettlementCommitter(store: store, spool: try SettlementSpool(path: path),
                                            rejects: try SettlementSpool(path: path + ".rejected"), logger: Logger(label: "test"))
        var bad = settlement("bad", lease: "none", "0.1")
        bad.transfers = [charge("bad", account: "ghost", "0.1")]
        async let good = committer.submit(settlement("good", lease: "none", "0.2"))
        async let refused = committer.submit(bad)
        #expect(await [good, refused].sorted { "\($0)" < "\($1)" } == [.committed, .rejected])
        #expect(try await store.creditTotals(account: "acct").usage == usd("0.2"))
        #expect(try await SettlementSpool(path: path + ".rejected").pending().map(\.generation.id) == ["bad"])
    }
}
