import Foundation
import Ledger
import Logging
import SignalboxCore
import SignalboxTestKit
import Testing

/// Polls `condition` until it holds or 15 s pass: a loaded machine (the whole suite runs in
/// parallel on two cores) delays background tasks, so waits are bounded by time, not by tries.
func waitUntil(_ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(15)
    while try await !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
}

@Suite struct SettlementCommitterTests {
    func settlement(_ id: String, lease: String, _ amount: String) -> Settlement {
        Settlement(
            reservation: .lease(id: lease, release: usd(amount)), transfers: [charge(id, account: "acct", amount)],
            generation: generation(id, account: "acct", cost: usd(amount)))
    }

    func spoolPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)/settlements.spool").path
    }

    @Test func concurrentSettlementsAreCommittedInFewerTransactions() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "10")
        _ = try await store.growLease(
            LeaseRequest(
                id: "lease", account: "acct", minimum: usd("5"), desired: usd("5"), shareDivisor: 1,
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
            Issue.record("no reservation")
            return
        }
        // Another node voids the lease (its TTL ran out by the ledger's clock while this node was paused).
        _ = try await store.shrinkLease(id: first.leaseID, by: .zero, ttl: 0, close: true)
        await credit.settle(
            first, charged: usd("0.1"), transfers: [charge("g1", account: "acct", "0.1")],
            generation: generation("g1", account: "acct", cost: usd("0.1")), idempotency: nil)
        guard case .reserved(let second) = try await credit.reserve(account: "acct", amount: usd("0.1")) else {
            Issue.record("no reservation")
            return
        }
        #expect(second.leaseID != first.leaseID)
        #expect(try await store.openLeaseAmount(id: second.leaseID) != nil)
        #expect(try await store.verify().isConsistent)
    }

    @Test func whileTheLedgerIsDownSettlementsAreSpooledThenReplayedExactlyOnce() async throws {
        let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
        try await ledger.createAccount(id: "acct", name: "A")
        try await grant(ledger, "acct", "10")
        _ = try await ledger.growLease(
            LeaseRequest(
                id: "lease", account: "acct", minimum: usd("5"), desired: usd("5"), shareDivisor: 1,
                ttl: 600))
        let path = spoolPath()
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: path), timeout: .seconds(1),
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
        try await waitUntil { await committer.currentStatus.spooled == 0 }
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
        let committer = SettlementCommitter(
            store: store, spool: try SettlementSpool(path: path),
            rejects: try SettlementSpool(path: path + ".rejected"), logger: Logger(label: "test"))
        var bad = settlement("bad", lease: "none", "0.1")
        bad.transfers = [charge("bad", account: "ghost", "0.1")]
        async let good = committer.submit(settlement("good", lease: "none", "0.2"))
        async let refused = committer.submit(bad)
        #expect(await [good, refused].sorted { "\($0)" < "\($1)" } == [.committed, .rejected])
        #expect(try await store.creditTotals(account: "acct").usage == usd("0.2"))
        #expect(try await SettlementSpool(path: path + ".rejected").pending().map(\.generation.id) == ["bad"])
    }

    @Test func aPoisonSettlementAtTheHeadOfTheSpoolIsSetAsideAndTheRestReplay() async throws {
        let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
        try await ledger.createAccount(id: "acct", name: "A")
        try await grant(ledger, "acct", "10")
        let path = spoolPath()
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: path),
            rejects: try SettlementSpool(path: path + ".rejected"), timeout: .seconds(1),
            replayInterval: .milliseconds(20), logger: Logger(label: "test"))
        ledger.isDown = true
        #expect(await committer.submit(settlement("poison", lease: "none", "0.1")) == .spooled)
        for index in 0..<5 { #expect(await committer.submit(settlement("after\(index)", lease: "none", "0.1")) == .spooled) }
        ledger.poison = ["poison"]
        ledger.isDown = false
        try await waitUntil { await committer.currentStatus.spooled == 0 }
        #expect(await committer.currentStatus.spooled == 0)
        #expect(await committer.currentStatus.rejected == 1)
        #expect(try await ledger.creditTotals(account: "acct").usage == usd("0.5"))
        let rejected = try await SettlementSpool(path: path + ".rejected").pendingRecords()
        #expect(rejected.map(\.settlement.generation.id) == ["poison"])
        #expect(rejected.first?.reason?.contains("cannot store poison") == true)
    }

    @Test func aSpoolThatCannotBeWrittenHoldsChargesInMemoryAndStopsPaidRequests() async throws {
        let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
        try await ledger.createAccount(id: "acct", name: "A")
        try await grant(ledger, "acct", "10")
        // Every write to /dev/full fails with ENOSPC: a full disk.
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: "/dev/full"), timeout: .seconds(1),
            replayInterval: .milliseconds(20), logger: Logger(label: "test"))
        ledger.isDown = true
        #expect(await committer.submit(settlement("kept", lease: "none", "0.1")) == .held)
        #expect(committer.reachability.isBacklogged)
        #expect(await committer.currentStatus.held == 1)
        ledger.isDown = false
        try await waitUntil { await committer.currentStatus.held == 0 }
        #expect(await committer.currentStatus.held == 0)
        try await waitUntil { !committer.reachability.isBacklogged }
        #expect(!committer.reachability.isBacklogged)
        #expect(try await ledger.creditTotals(account: "acct").usage == usd("0.1"))
    }

    @Test func spooledSettlementsOlderThanTheMaximumAgeStopPaidRequests() async throws {
        let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
        try await ledger.createAccount(id: "acct", name: "A")
        try await grant(ledger, "acct", "10")
        let committer = SettlementCommitter(
            store: ledger, spool: try SettlementSpool(path: spoolPath()), timeout: .seconds(1),
            replayInterval: .milliseconds(50), maxSpoolAge: 1, logger: Logger(label: "test"))
        ledger.isDown = true
        let spooledAt = ContinuousClock.now
        #expect(await committer.submit(settlement("waiting", lease: "none", "0.1")) == .spooled)
        let backlogged = committer.reachability.isBacklogged
        // Not before the oldest settlement is a second old (unless the loaded machine took that long to get here).
        if ContinuousClock.now - spooledAt < .milliseconds(900) { #expect(!backlogged) }
        try await waitUntil { committer.reachability.isBacklogged }
        #expect(committer.reachability.isBacklogged)
        ledger.isDown = false
        try await waitUntil { !committer.reachability.isBacklogged }
        #expect(!committer.reachability.isBacklogged)
    }
}

@Suite struct SettlementSpoolTests {
    func settlement(_ id: String) -> Settlement {
        Settlement(
            reservation: .lease(id: "lease", release: usd("0.1")), transfers: [charge(id, account: "acct", "0.1")],
            generation: generation(id, account: "acct", cost: usd("0.1")))
    }

    func path() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("spool-\(UUID().uuidString)/settlements.spool").path
    }

    func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1 }

    @Test func aRecordFromTheDaysOfPerRequestHoldsSettlesWithoutAReservation() async throws {
        let path = path()
        try await SettlementSpool(path: path).append([settlement("old")])
        // The same record as a version with per-request holds wrote it.
        let payload = String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)).dropFirst(12), as: UTF8.self)
        let legacy = payload.replacingOccurrences(of: #""lease":{"#, with: #""hold":{"#)
        #expect(legacy != payload)
        try Data(SpoolFile.frame(Array(legacy.utf8))).write(to: URL(fileURLWithPath: path))
        let recovered = try await SettlementSpool(path: path).pending()
        #expect(recovered.map(\.generation.id) == ["old"])
        #expect(recovered.first?.reservation == nil && recovered.first?.transfers == settlement("old").transfers)
        // A malformed lease is still an error, not a silently dropped reservation.
        let malformed =
            #"{"reservation":{"lease":{"id":"x","release":"not money"}},"transfers":[],"generation":"#
            + String(decoding: try JSONEncoder().encode(generation("g", account: "acct")), as: UTF8.self) + "}"
        #expect(throws: (any Error).self) { try JSONDecoder().decode(Settlement.self, from: Data(malformed.utf8)) }
    }

    @Test func aTornLastRecordIsCutOnOpenAndTheRestKept() async throws {
        let path = path()
        try await SettlementSpool(path: path).append((0..<3).map { settlement("g\($0)") })
        let whole = size(path)
        // A crash mid-write: half of a fourth record.
        let fourth = SpoolFile.frame(Array(try JSONEncoder().encode(["x": String(repeating: "y", count: 400)])))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(fourth.prefix(fourth.count / 2)))
        try handle.close()
        let reopened = try SettlementSpool(path: path)
        #expect(try await reopened.pending().map(\.generation.id) == ["g0", "g1", "g2"])
        #expect(await reopened.recovery.truncatedBytes == fourth.count / 2)
        #expect(size(path) == whole)
        try await reopened.append([settlement("g3")])
        #expect(try await SettlementSpool(path: path).pending().map(\.generation.id) == ["g0", "g1", "g2", "g3"])
    }

    @Test func aDamagedRecordInTheMiddleIsSkippedWithoutLosingLaterOnes() async throws {
        let path = path()
        try await SettlementSpool(path: path).append((0..<4).map { settlement("g\($0)") })
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let second = try #require(SpoolFile.recordStarts(bytes).dropFirst().first)
        bytes[second + SpoolFile.headerSize + 10] ^= 0xff  // one flipped byte in the second record's JSON
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let reopened = try SettlementSpool(path: path)
        #expect(try await reopened.pending().map(\.generation.id) == ["g0", "g2", "g3"])
        #expect(await reopened.recovery.corruptRecords == 1)
    }

    @Test func aDamagedLengthPastTheEndIsNotMistakenForATornTail() async throws {
        let path = path()
        try await SettlementSpool(path: path).append((0..<4).map { settlement("g\($0)") })
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let second = try #require(SpoolFile.recordStarts(bytes).dropFirst().first)
        bytes[second + 6] = 0x10  // the second record's length now claims ~1 MiB, past the end of the file
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let reopened = try SettlementSpool(path: path)
        #expect(try await reopened.pending().map(\.generation.id) == ["g0", "g2", "g3"])
        let recovery = await reopened.recovery
        #expect(recovery.corruptRecords == 1 && recovery.truncatedBytes == 0)
    }

    @Test func replayAdvancesACheckpointInsteadOfRewritingAndEmptiesTheFileAtTheEnd() async throws {
        let path = path()
        let spool = try SettlementSpool(path: path)
        try await spool.append((0..<5).map { settlement("g\($0)") })
        let whole = size(path)
        let first = try await spool.next(2)
        try await spool.advance(past: try #require(first.last), replayed: 2)
        #expect(size(path) == whole)  // not rewritten
        #expect(await spool.count == 3)
        #expect(try await SettlementSpool(path: path).pending().map(\.generation.id) == ["g2", "g3", "g4"])
        let rest = try await spool.next(10)
        try await spool.advance(past: try #require(rest.last), replayed: rest.count)
        let (count, oldest) = (await spool.count, await spool.oldest)
        #expect(size(path) == 0 && count == 0 && oldest == nil)
        #expect(try await SettlementSpool(path: path).pending().isEmpty)
    }

    @Test func aSpoolOfTheOldLineFormatIsConverted() async throws {
        let path = path()
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let lines = try (0..<2).map { String(decoding: try JSONEncoder().encode(settlement("old\($0)")), as: UTF8.self) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let spool = try SettlementSpool(path: path)
        #expect(await spool.recovery.convertedLegacyRecords == 2)
        #expect(try await spool.pending().map(\.generation.id) == ["old0", "old1"])
    }
}
