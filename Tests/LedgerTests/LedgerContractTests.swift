import Foundation
@testable import Ledger
import PostgresNIO
import SignalboxTestKit
import SignalboxCore
import Testing

/// The stores every contract test runs against. The PostgreSQL store joins this list; each
/// test then holds for both.
enum StoreKind: String, CustomTestStringConvertible, Sendable {
    case sqliteFile
    case sqliteMemory
    /// A fresh database on the PostgreSQL at `SIGNALBOX_TEST_DATABASE_URL` (which `.ci/run` starts).
    case postgres

    var testDescription: String { rawValue }

    /// Every store; PostgreSQL whenever a test database is configured — and always in CI, where a
    /// missing database must fail the run rather than skip these tests.
    static var allCases: [StoreKind] { [.sqliteFile, .sqliteMemory] + (TestDatabase.required ? [.postgres] : []) }

    /// Runs `body` against a fresh store, and closes it afterwards.
    func with(_ body: (any LedgerStore) async throws -> Void) async throws {
        if self == .postgres { return try await TestDatabase.withFreshLedger(body) }
        let store = try await make()
        do { try await body(store) } catch {
            try await store.close()
            throw error
        }
        try await store.close()
    }

    func make() async throws -> any LedgerStore {
        switch self {
        case .sqliteFile:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString).sqlite").path
            return try await SQLiteLedgerStore.open(path: path)
        case .sqliteMemory:
            return try await SQLiteLedgerStore.open(path: nil)
        case .postgres:
            throw LedgerError.storage("postgres stores are made by TestDatabase.withFreshLedger")
        }
    }
}

func usd(_ text: String) -> Money { Money(decimal: text)! }

func grant(_ store: any LedgerStore, _ account: String, _ amount: String, key: String = UUID().uuidString) async throws {
    try await store.post([
        TransferRequest(
            idempotencyKey: key, debit: Billing.SystemAccount.grants, credit: account,
            amount: usd(amount), kind: .grant)
    ])
}

/// A generation whose one attempt cost the provider what the client is charged (as settlements record it).
func generation(_ id: String, account: String, cost: Money = .zero) -> GenerationRecord {
    GenerationRecord(
        id: id, accountID: account, keyID: "k1", model: "acme/big", providerName: "Alpha", providerTag: "alpha",
        upstreamID: nil, streamed: false, cancelled: false, finishReason: "stop", nativeFinishReason: "stop",
        usage: TokenUsage(promptTokens: 10, completionTokens: 5), cost: cost, latencyMs: 12,
        generationTimeMs: 30,
        attempts: [
            AttemptRecord(
                provider: "alpha", providerName: "Alpha", model: "acme/big",
                status: "200", latencyMs: 12, providerCost: cost)
        ],
        createdAt: Date())
}

/// Settles one request with no reservation behind it (system-account transfers, or a request
/// whose reservation is gone: its customer pays only what it has available).
func settleUnreserved(
    _ store: any LedgerStore, transfers: [TransferRequest], generation: GenerationRecord,
    idempotency: IdempotencyOutcome?
) async throws {
    try await store.settle([Settlement(reservation: nil, transfers: transfers, generation: generation, idempotency: idempotency)])
}

func charge(_ generationID: String, account: String, _ amount: String, keyID: String? = "k1") -> TransferRequest {
    TransferRequest(
        idempotencyKey: "charge:" + generationID, debit: account, credit: Billing.SystemAccount.provider("alpha"),
        amount: usd(amount), kind: .charge, keyID: keyID, generationID: generationID)
}

@Suite struct LedgerContractTests {
    @Test(arguments: StoreKind.allCases)
    func transfersMoveMoneyAndBalancesSumToZero(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "10")
            try await store.post([charge("g1", account: "acct", "0.25")])
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("9.75"), available: usd("9.75")))
            #expect(try await store.balance(account: "provider:alpha").balance == usd("0.25"))
            // A charge posted outside a settlement belongs to no generation: verify names it.
            let verification = try await store.verify()
            #expect(!verification.isConsistent)
            #expect(verification[.chargesMatchGenerationCosts].violations == 1)
            #expect(verification[.balancesMatchEntries].holds && verification[.balancesSumToZero].holds)
            #expect(verification.transferCount == 2)
            try await settleUnreserved(
                store, transfers: [], generation: generation("g1", account: "acct", cost: usd("0.25")),
                idempotency: nil)
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func replayingATransferIsANoOpAndReusingItsKeyIsRefused(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "5", key: "grant-1")
            try await grant(store, "acct", "5", key: "grant-1")
            #expect(try await store.balance(account: "acct").balance == usd("5"))
            await #expect(throws: LedgerError.idempotencyConflict("grant-1")) { try await grant(store, "acct", "6", key: "grant-1") }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aReplayRecordsNothingAndSaysSo(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            #expect(try await store.post(TransferRequest.purchase(account: "acct", credit: usd("25"), reference: "inv-1")) == 2)
            #expect(try await store.post(TransferRequest.purchase(account: "acct", credit: usd("25"), reference: "inv-1")) == 0)
            #expect(try await store.balance(account: "acct").balance == usd("25"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func anExportHandsOverEveryEntryOnceInPagesNewestFirst(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            for batch in 0..<25 {
                try await store.post(
                    (0..<100).map { n in
                        TransferRequest(
                            idempotencyKey: "g-\(batch)-\(n)", debit: Billing.SystemAccount.grants, credit: "acct", amount: usd("0.01"),
                            kind: .grant)
                    })
            }
            var pages: [Int] = []
            var ids: [Int64] = []
            try await store.forEachEntry(EntryQuery(account: "acct", limit: .max), pageSize: 1000) { page in
                pages.append(page.count)
                ids += page.map(\.transfer.id)
            }
            #expect(pages == [1000, 1000, 500])
            #expect(ids.count == 2500 && Set(ids).count == 2500 && ids == ids.sorted(by: >))
            var capped = 0
            try await store.forEachEntry(EntryQuery(account: "acct", limit: 1234), pageSize: 1000) { capped += $0.count }
            #expect(capped == 1234)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aBatchIsAllOrNothing(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            await #expect(throws: LedgerError.unknownAccount("ghost")) {
                try await store.post([
                    TransferRequest(
                        idempotencyKey: "a", debit: Billing.SystemAccount.grants, credit: "acct", amount: usd("1"), kind: .grant),
                    TransferRequest(
                        idempotencyKey: "b", debit: Billing.SystemAccount.grants, credit: "ghost", amount: usd("1"), kind: .grant),
                ])
            }
            #expect(try await store.balance(account: "acct").balance == .zero)
            #expect(try await store.entries(account: "acct", limit: 10).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func settlingPostsTheChargeShrinksTheLeaseAndStoresTheGeneration(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            _ = try await store.growLease(
                LeaseRequest(
                    id: "lease", account: "acct", minimum: usd("0.5"), desired: usd("0.5"),
                    shareDivisor: 1, ttl: 600))
            let settlement = Settlement(
                reservation: .lease(id: "lease", release: usd("0.123")),
                transfers: [charge("g1", account: "acct", "0.123")],
                generation: generation("g1", account: "acct", cost: usd("0.123")))
            try await store.settle([settlement])
            try await store.settle([settlement])  // a replayed settlement charges nothing more and releases nothing more
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.877"), available: usd("0.5")))
            #expect(try await store.openLeaseAmount(id: "lease") == usd("0.377"))
            let stored = try #require(try await store.generation(id: "g1"))
            #expect(stored.cost == usd("0.123"))
            #expect(stored.usage.completionTokens == 5)
            #expect(try await store.creditTotals(account: "acct") == (usd("1"), usd("0.123")))
            #expect(try await store.purchasedTotal(account: "acct") == .zero)  // granted, not bought
            try await store.post([
                TransferRequest(
                    idempotencyKey: "buy", debit: Billing.SystemAccount.purchases, credit: "acct",
                    amount: usd("5"), kind: .purchase)
            ])
            #expect(try await store.purchasedTotal(account: "acct") == usd("5"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func closingAndExpiryGiveLeasesBackWithoutCharging(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            for (id, ttl) in [("close-me", 600.0), ("stale", -1)] {
                _ = try await store.growLease(
                    LeaseRequest(
                        id: id, account: "acct", minimum: usd("0.3"), desired: usd("0.3"),
                        shareDivisor: 1, ttl: ttl))
            }
            #expect(try await store.balance(account: "acct").available == usd("0.4"))
            #expect(try await store.shrinkLease(id: "close-me", by: .zero, ttl: 600, close: true) == .zero)
            #expect(try await store.shrinkLease(id: "close-me", by: .zero, ttl: 600, close: true) == nil)  // already closed
            #expect(try await store.expireLeases() == 1)
            #expect(try await store.openLeaseAmount(id: "close-me") == nil)
            #expect(try await store.openLeaseAmount(id: "stale") == nil)
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("1"), available: usd("1")))
            // A request that outlived its lease is still charged.
            try await store.settle([
                Settlement(
                    reservation: .lease(id: "stale", release: usd("0.1")),
                    transfers: [charge("g-stale", account: "acct", "0.1")],
                    generation: generation("g-stale", account: "acct", cost: usd("0.1")))
            ])
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.9"), available: usd("0.9")))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func leasesGrowWithinTheAvailableCreditShrinkWithChargesAndCloseWhenExpired(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            // A quarter of what is available at most, but never less than the minimum.
            #expect(
                try await store.growLease(
                    LeaseRequest(
                        id: "lease-a", account: "acct", minimum: usd("0.1"), desired: usd("5"),
                        ttl: 600)) == .granted(added: usd("0.25"), total: usd("0.25")))
            #expect(
                try await store.growLease(
                    LeaseRequest(
                        id: "lease-a", account: "acct", minimum: usd("0.5"), desired: usd("0.5"),
                        ttl: 600)) == .granted(added: usd("0.5"), total: usd("0.75")))
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("1"), available: usd("0.25")))
            #expect(
                try await store.growLease(
                    LeaseRequest(
                        id: "lease-b", account: "acct", minimum: usd("0.3"), desired: usd("1"),
                        ttl: 600)) == .insufficient(available: usd("0.25")))
            // Two settlements in one batch: each charge comes out of the lease, so available stays put.
            try await store.settle([
                Settlement(
                    reservation: .lease(id: "lease-a", release: usd("0.2")), transfers: [charge("g1", account: "acct", "0.2")],
                    generation: generation("g1", account: "acct", cost: usd("0.2"))),
                Settlement(
                    reservation: .lease(id: "lease-a", release: usd("0.05")), transfers: [charge("g2", account: "acct", "0.05")],
                    generation: generation("g2", account: "acct", cost: usd("0.05"))),
            ])
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.75"), available: usd("0.25")))
            // Shrinking gives unused credit back; it never goes below zero.
            #expect(try await store.shrinkLease(id: "lease-a", by: usd("0.4"), ttl: 600, close: false) == usd("0.1"))
            #expect(try await store.shrinkLease(id: "lease-a", by: usd("9"), ttl: 600, close: false) == .zero)
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.75"), available: usd("0.75")))
            // An expired lease is voided; growing it again says so, and its late charges still post.
            _ = try await store.growLease(
                LeaseRequest(
                    id: "lease-c", account: "acct", minimum: usd("0.1"), desired: usd("0.1"),
                    ttl: -1))
            #expect(try await store.expireLeases() == 1)
            #expect(
                try await store.growLease(
                    LeaseRequest(
                        id: "lease-c", account: "acct", minimum: usd("0.1"), desired: usd("0.1"),
                        ttl: 600)) == .closed)
            #expect(try await store.shrinkLease(id: "lease-c", by: usd("0.1"), ttl: 600, close: false) == nil)
            try await store.settle([
                Settlement(
                    reservation: .lease(id: "lease-c", release: usd("0.1")),
                    transfers: [charge("g3", account: "acct", "0.1")],
                    generation: generation("g3", account: "acct", cost: usd("0.1")))
            ])
            #expect(try await store.shrinkLease(id: "lease-a", by: .zero, ttl: 600, close: true) == .zero)
            #expect(try await store.openLeaseAmount(id: "lease-a") == nil)
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.65"), available: usd("0.65")))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func noCustomerGoesBelowZeroOrBelowWhatItHolds(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            _ = try await store.growLease(
                LeaseRequest(
                    id: "lease", account: "acct", minimum: usd("0.5"), desired: usd("0.5"),
                    shareDivisor: 1, ttl: 600))
            func debit(_ amount: String, _ key: String) -> TransferRequest {
                TransferRequest(
                    idempotencyKey: key, debit: "acct", credit: Billing.SystemAccount.grants, amount: usd(amount), kind: .reversal)
            }
            // 0.6 would leave 0.4 under a 0.5 lease; 2 would go below zero.
            await #expect(throws: LedgerError.self) { try await store.post([debit("0.6", "r1")]) }
            await #expect(throws: LedgerError.self) { try await store.post([debit("2", "r2")]) }
            do { try await store.post([debit("0.6", "r3")]) } catch let error as LedgerError {
                guard case .overdrawn = error else {
                    Issue.record("expected overdrawn, got \(error)")
                    return
                }
                #expect(error.isRefusal)
            }
            try await store.post([debit("0.5", "r4")])
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.5"), available: .zero))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aSettlementWhoseLeaseExpiredChargesOnlyWhatIsAvailableAndBooksTheRestAsOverage(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            _ = try await store.growLease(
                LeaseRequest(
                    id: "old", account: "acct", minimum: usd("0.5"), desired: usd("0.5"),
                    shareDivisor: 1, ttl: -1))
            #expect(try await store.expireLeases() == 1)
            // Meanwhile another node leased 0.8 of the account's 1.
            _ = try await store.growLease(
                LeaseRequest(
                    id: "new", account: "acct", minimum: usd("0.8"), desired: usd("0.8"),
                    shareDivisor: 1, ttl: 600))
            try await store.settle([
                Settlement(
                    reservation: .lease(id: "old", release: usd("0.5")),
                    transfers: [charge("late", account: "acct", "0.5")],
                    generation: generation("late", account: "acct", cost: usd("0.5")))
            ])
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.8"), available: .zero))
            let overage = try await store.entries(EntryQuery(account: Billing.SystemAccount.overage, limit: 10))
            #expect(overage.map(\.transfer.amount) == [usd("0.3")])
            #expect(overage.first?.transfer.kind == .overage)
            #expect(try await store.balance(account: Billing.SystemAccount.provider("alpha")).balance == usd("0.5"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func amountsAreBoundedAndBalancesNeverLeaveTheIntegerRange(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "rich", name: "R")
            try await store.post([
                TransferRequest(
                    idempotencyKey: "max", debit: Billing.SystemAccount.grants, credit: "rich",
                    amount: .maximumAmount, kind: .grant)
            ])
            await #expect(throws: LedgerError.invalidAmount(.maximumAmount + Money(nanos: 1))) {
                try await store.post([
                    TransferRequest(
                        idempotencyKey: "max+1", debit: Billing.SystemAccount.grants, credit: "rich",
                        amount: .maximumAmount + Money(nanos: 1), kind: .grant)
                ])
            }
            // Enough maximal entries to take a balance past 2^63 nano-dollars: refused, never wrapped or rounded.
            let count = Int(Int64.max / Money.maximumAmount.nanos) + 1
            let flood = (0..<count).map { index in
                TransferRequest(
                    idempotencyKey: "flood-\(index)", debit: Billing.SystemAccount.grants, credit: Billing.SystemAccount.fees,
                    amount: .maximumAmount, kind: .adjustment)
            }
            do {
                try await store.post(flood)
                Issue.record("a balance past the 64-bit range was accepted")
            } catch let error as LedgerError {
                guard case .balanceOutOfRange = error else {
                    Issue.record("expected balanceOutOfRange, got \(error)")
                    return
                }
            }
            #expect(try await store.balance(account: "rich").balance == .maximumAmount)
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aRestartedNodeGivesBackOnlyItsOwnPreviousLeases(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            for id in ["lease:n1:acct:1:1", "lease:n10:acct:1:1", "lease:n2:acct:1:1"] {
                _ = try await store.growLease(LeaseRequest(id: id, account: "acct", minimum: usd("0.1"), desired: usd("0.1"), ttl: 600))
            }
            try await Task.sleep(for: .milliseconds(20))
            let restart = Date()
            _ = try await store.growLease(
                LeaseRequest(
                    id: "lease:n1:acct:2:1", account: "acct", minimum: usd("0.1"), desired: usd("0.1"),
                    ttl: 600))
            #expect(try await store.returnLeftoverLeases(nodeID: "n1", createdBefore: restart) == 1)
            #expect(try await store.openLeaseAmount(id: "lease:n1:acct:1:1") == nil)
            #expect(try await store.openLeaseAmount(id: "lease:n10:acct:1:1") == usd("0.1"))  // another node whose id shares a prefix
            #expect(try await store.openLeaseAmount(id: "lease:n1:acct:2:1") == usd("0.1"))  // this run's own
            #expect(try await store.balance(account: "acct").available == usd("0.7"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aReplayedBatchChargesNothingTwiceAndABadSettlementFailsTheWholeBatch(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            _ = try await store.growLease(
                LeaseRequest(
                    id: "lease", account: "acct", minimum: usd("0.5"), desired: usd("0.5"),
                    shareDivisor: 1, ttl: 600))
            let batch = (1...20).map { index in
                Settlement(
                    reservation: .lease(id: "lease", release: usd("0.01")), transfers: [charge("b\(index)", account: "acct", "0.01")],
                    generation: generation("b\(index)", account: "acct", cost: usd("0.01")))
            }
            try await store.settle(batch)
            try await store.settle(batch)  // a spool replayed after a commit that did land
            try await store.settle(Array(batch.prefix(5)))
            #expect(try await store.balance(account: "acct") == AccountBalance(balance: usd("0.8"), available: usd("0.5")))
            #expect(try await store.creditTotals(account: "acct").usage == usd("0.2"))
            // A settlement naming a customer account that does not exist rolls back its whole batch.
            var bad = batch[0]
            bad.generation.id = "bad"
            bad.transfers = [charge("bad", account: "nobody", "0.01")]
            var good = batch[1]
            good.generation.id = "good"
            good.transfers = [charge("good", account: "acct", "0.01")]
            await #expect(throws: LedgerError.self) { try await store.settle([good, bad]) }
            #expect(try await store.generation(id: "good") == nil)
            #expect(try await store.balance(account: "acct").balance == usd("0.8"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func entriesAndSpendAnswerWhoSpentWhatWhereAndWhen(kind: StoreKind) async throws {
        try await kind.with { store in
            for account in ["alice", "bob"] {
                try await store.createAccount(id: account, name: account)
                try await grant(store, account, "5")
            }
            func settled(_ id: String, _ account: String, _ key: String, _ model: String, _ provider: String, _ amount: String)
                -> Settlement
            {
                var record = generation(id, account: account, cost: usd(amount))
                record.model = model
                return Settlement(
                    reservation: nil,
                    transfers: [
                        TransferRequest(
                            idempotencyKey: "charge:" + id, debit: account, credit: Billing.SystemAccount.provider(provider),
                            amount: usd(amount),
                            kind: .charge, keyID: key, generationID: id)
                    ], generation: record)
            }
            try await store.settle([
                settled("g1", "alice", "k-a", "openai/gpt-4o-mini", "openai", "0.10"),
                settled("g2", "alice", "k-a", "openai/gpt-4o-mini", "azure", "0.20"),
                settled("g3", "alice", "k-a2", "anthropic/claude", "anthropic", "0.40"),
                settled("g4", "bob", "k-b", "openai/gpt-4o-mini", "openai", "1.00"),
            ])
            let aliceOpenAI = try await store.entries(EntryQuery(account: "alice", model: "openai/gpt-4o-mini"))
            #expect(aliceOpenAI.map(\.transfer.generationID) == ["g2", "g1"])
            #expect(aliceOpenAI.map(\.provider) == ["azure", "openai"])
            #expect(try await store.entries(EntryQuery(keyID: "k-a2")).map(\.model) == ["anthropic/claude"])
            #expect(try await store.entries(EntryQuery(provider: "openai")).map(\.transfer.generationID) == ["g4", "g1"])
            #expect(try await store.entries(EntryQuery(account: "bob", kind: .grant)).count == 1)
            #expect(try await store.entries(EntryQuery(since: Date().addingTimeInterval(60))).isEmpty)
            #expect(try await store.entries(EntryQuery(until: Date().addingTimeInterval(-3600))).isEmpty)
            #expect(try await store.entries(EntryQuery(account: "alice", limit: 2)).count == 2)

            #expect(
                try await store.spend(EntryQuery(account: "alice"), by: .provider) == [
                    SpendRow(group: "anthropic", amount: usd("0.4"), requests: 1),
                    SpendRow(group: "azure", amount: usd("0.2"), requests: 1),
                    SpendRow(group: "openai", amount: usd("0.1"), requests: 1),
                ])
            #expect(
                try await store.spend(EntryQuery(), by: .model) == [
                    SpendRow(group: "openai/gpt-4o-mini", amount: usd("1.3"), requests: 3),
                    SpendRow(group: "anthropic/claude", amount: usd("0.4"), requests: 1),
                ])
            #expect(try await store.spend(EntryQuery(model: "openai/gpt-4o-mini"), by: .account).map(\.group) == ["bob", "alice"])
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd"
            formatter.timeZone = TimeZone(identifier: "UTC")
            #expect(
                try await store.spend(EntryQuery(), by: .day) == [
                    SpendRow(group: formatter.string(from: Date()), amount: usd("1.7"), requests: 4)
                ])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func accountsAndKeysCanBePinnedToARegion(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await store.insertKey(KeyRecord(id: "k1", accountID: "acct", hash: "h1", label: "l1", name: "one"))
            try await store.insertKey(KeyRecord(id: "k2", accountID: "acct", hash: "h2", label: "l2", name: "two", region: "us"))
            #expect(try await store.key(hash: "h1")?.pinnedRegion == nil)
            #expect(try await store.setRegion(account: "acct", region: "eu"))
            #expect(try await store.account(id: "acct")?.region == "eu")
            #expect(try await store.key(hash: "h1")?.pinnedRegion == "eu")  // from its account
            #expect(try await store.key(hash: "h2")?.pinnedRegion == "us")  // its own pin wins
            #expect(try await store.setRegion(keyHash: "h2", region: nil)?.pinnedRegion == "eu")
            #expect(try await store.keys(account: "acct").map(\.pinnedRegion) == ["eu", "eu"])
            #expect(try await !store.setRegion(account: "nobody", region: "eu"))
            #expect(try await !store.setRegion(account: "platform:fees", region: "eu"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentLeaseGrowthsNeverReserveMoreThanTheBalance(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            let granted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<50 {
                    group.addTask {
                        if case .granted = try await store.growLease(
                            LeaseRequest(
                                id: "lease-\(index)", account: "acct", minimum: usd("0.07"), desired: usd("0.07"), shareDivisor: 1, ttl: 600
                            ))
                        {
                            return true
                        }
                        return false
                    }
                }
                return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
            }
            #expect(granted == 14)  // 14 × 0.07 = 0.98 ≤ 1 < 15 × 0.07
            #expect(try await store.balance(account: "acct").available == usd("0.02"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func keysAreFoundByHashAndReportSpendByWindow(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "5")
            try await store.insertKey(
                KeyRecord(
                    id: "k1", accountID: "acct", hash: "abc123", label: "sk-…", name: "main",
                    limit: usd("2"), limitReset: "monthly"))
            let key = try #require(try await store.key(hash: "abc123"))
            #expect(key.accountID == "acct" && key.limit == usd("2") && key.limitReset == "monthly" && !key.isAdmin)
            #expect(try await store.key(hash: "nope") == nil)
            try await store.post([charge("g1", account: "acct", "0.5"), charge("g2", account: "acct", "0.25", keyID: "other")])
            let usage = try await store.keyUsage(keyID: "k1", now: Date())
            #expect(usage == KeyUsage(total: usd("0.5"), daily: usd("0.5"), weekly: usd("0.5"), monthly: usd("0.5")))
            let tomorrowWeekLater = try await store.keyUsage(keyID: "k1", now: Date().addingTimeInterval(40 * 86400))
            #expect(tomorrowWeekLater.total == usd("0.5") && tomorrowWeekLater.monthly == .zero && tomorrowWeekLater.daily == .zero)
            #expect(try await store.keys(account: "acct").map(\.id) == ["k1"])
            #expect(try await store.setKeyDisabled(id: "k1", disabled: true))
            #expect(try await store.key(hash: "abc123")?.disabled == true)
            #expect(try await store.setKeyDisabled(id: "nope", disabled: true) == false)
            let updated = try await store.updateKey(hash: "abc123", name: "renamed", disabled: false, limit: .some(nil), limitReset: nil)
            #expect(updated?.name == "renamed" && updated?.disabled == false && updated?.limit == nil && updated?.limitReset == "monthly")
            #expect(try await store.deleteKey(hash: "abc123"))
            #expect(try await store.key(hash: "abc123") == nil)
            #expect(try await store.deleteKey(hash: "abc123") == false)
            #expect(try await store.updateKey(hash: "abc123", name: "x", disabled: nil, limit: nil, limitReset: nil) == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func idempotencyKeysAreClaimedCompletedAndReleasedWithTheSettlement(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            func claim(_ account: String, _ id: String, fingerprint: String = "f", staleAfter: TimeInterval = 60) async throws
                -> IdempotencyClaim
            {
                try await store.claimIdempotencyKey(
                    IdempotencyClaimRequest(
                        account: account, key: "k", generationID: id, fingerprint: fingerprint, staleAfter: staleAfter))
            }
            #expect(try await claim("acct", "g1") == .claimed)
            #expect(try await claim("acct", "g2") == .inProgress(generationID: "g1"))
            #expect(try await claim("acct", "g2", fingerprint: "other body") == .reused(generationID: "g1"))
            // another account's key of the same name is its own
            try await store.createAccount(id: "other", name: "B")
            #expect(try await claim("other", "g3") == .claimed)
            try await settleUnreserved(
                store, transfers: [charge("g1", account: "acct", "0.1")],
                generation: generation("g1", account: "acct", cost: usd("0.1")),
                idempotency: .completed(account: "acct", key: "k", response: #"{"id":"g1"}"#))
            #expect(try await claim("acct", "g4") == .completed(generationID: "g1", response: #"{"id":"g1"}"#))
            #expect(try await claim("acct", "g4", fingerprint: "other body") == .reused(generationID: "g1"))
            // a failed request releases its key; only the owner's release counts
            try await store.releaseIdempotencyClaim(account: "other", key: "k", generationID: "not-the-owner")
            #expect(try await claim("other", "g5") == .inProgress(generationID: "g3"))
            try await settleUnreserved(
                store, transfers: [], generation: generation("g3", account: "other"),
                idempotency: .released(account: "other", key: "k"))
            #expect(try await claim("other", "g5") == .claimed)
            #expect(try await store.balance(account: "acct").balance == usd("0.9"))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aTakenOverClaimTurnsTheFirstOwnersLateSettlementIntoOverageNeverASecondCharge(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "acct", name: "A")
            try await grant(store, "acct", "1")
            let request = { (id: String) in
                IdempotencyClaimRequest(account: "acct", key: "k", generationID: id, fingerprint: "f", staleAfter: 6)
            }
            #expect(try await store.claimIdempotencyKey(request("first")) == .claimed)
            // A renewed claim stays its owner's; one left alone past the stale window (by the ledger's clock) is taken over.
            // (A sleep can end late, never early, and the suites beside this one can hold up a
            // wake-up: the renewal has 2 s to spare, the check 3.5 s.)
            try await Task.sleep(for: .seconds(4))
            #expect(try await store.renewIdempotencyClaim(account: "acct", key: "k", generationID: "first"))
            try await Task.sleep(for: .milliseconds(2500))  // 6.5 s after the claim, past its window; 2.5 s after the renewal
            #expect(try await store.claimIdempotencyKey(request("retry")) == .inProgress(generationID: "first"))
            try await Task.sleep(for: .seconds(7))
            #expect(try await store.claimIdempotencyKey(request("retry")) == .claimed)
            #expect(try await store.renewIdempotencyClaim(account: "acct", key: "k", generationID: "first") == false)
            try await settleUnreserved(
                store, transfers: [charge("retry", account: "acct", "0.1")],
                generation: generation("retry", account: "acct", cost: usd("0.1")),
                idempotency: .completed(account: "acct", key: "k", response: #"{"id":"retry"}"#))
            // The first owner's settlement arrives late (its spool replayed): no second charge, the provider still paid.
            try await settleUnreserved(
                store, transfers: [charge("first", account: "acct", "0.1")],
                generation: generation("first", account: "acct", cost: usd("0.1")),
                idempotency: .completed(account: "acct", key: "k", response: #"{"id":"first"}"#))
            #expect(try await store.balance(account: "acct").balance == usd("0.9"))
            #expect(try await store.generation(id: "first")?.cost == .zero)
            #expect(try await store.balance(account: Billing.SystemAccount.overage).balance == usd("-0.1"))
            #expect(try await store.balance(account: Billing.SystemAccount.provider("alpha")).balance == usd("0.2"))
            #expect(
                try await store.claimIdempotencyKey(request("again")) == .completed(generationID: "retry", response: #"{"id":"retry"}"#))
            // Taken over, and the request that took it over failed and released the key: the claim
            // is gone, and the first owner's late settlement is still not charged (a new retry will be).
            let other = { (id: String) in
                IdempotencyClaimRequest(account: "acct", key: "k2", generationID: id, fingerprint: "f", staleAfter: 0.5)
            }
            #expect(try await store.claimIdempotencyKey(other("slow")) == .claimed)
            try await Task.sleep(for: .milliseconds(1200))
            #expect(try await store.claimIdempotencyKey(other("failed-retry")) == .claimed)
            try await settleUnreserved(
                store, transfers: [], generation: generation("failed-retry", account: "acct"),
                idempotency: .released(account: "acct", key: "k2"))
            try await settleUnreserved(
                store, transfers: [charge("slow", account: "acct", "0.1")],
                generation: generation("slow", account: "acct", cost: usd("0.1")),
                idempotency: .completed(account: "acct", key: "k2", response: #"{"id":"slow"}"#))
            #expect(try await store.balance(account: "acct").balance == usd("0.9"))
            #expect(try await store.claimIdempotencyKey(other("next")) == .claimed)
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func migrateIsIdempotent(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.migrate()
            try await store.migrate()
            #expect(try await store.account(id: Billing.SystemAccount.fees)?.isSystem == true)
        }
    }
}

/// The PostgreSQL store's one-round-trip path: a batch on open leases, with idempotency claims,
/// settles in one statement and leaves the same ledger the general path would.
@Suite(.enabled(if: TestDatabase.required, "no PostgreSQL configured")) struct PostgresOneStatementTests {
    @Test func aBatchOnOpenLeasesSettlesInOneStatementAndAReplayTakesTheGeneralPath() async throws {
        try await TestDatabase.withFreshLedger { store in
            for account in ["a", "b"] {
                try await store.createAccount(id: account, name: account)
                try await grant(store, account, "1")
                _ = try await store.growLease(
                    LeaseRequest(
                        id: "lease-\(account)", account: account, minimum: usd("0.5"),
                        desired: usd("0.5"), shareDivisor: 1, ttl: 600))
            }
            #expect(
                try await store.claimIdempotencyKey(
                    IdempotencyClaimRequest(
                        account: "a", key: "k", generationID: "a0", fingerprint: "f", staleAfter: 60)) == .claimed)
            let batch = (0..<40).map { index in
                let account = index % 2 == 0 ? "a" : "b"
                return Settlement(
                    reservation: .lease(id: "lease-\(account)", release: usd("0.01")),
                    transfers: [charge("\(account)\(index)", account: account, "0.01")],
                    generation: generation("\(account)\(index)", account: account, cost: usd("0.01")),
                    idempotency: index == 0 ? .completed(account: "a", key: "k", response: "{}") : nil)
            }
            try await store.requireAccounts([Billing.SystemAccount.provider("alpha")])
            #expect(try await store.settleInOneStatement(batch))
            // Every column arrives as sent: absent optionals as NULL, present ones as themselves.
            let stored = try #require(try await store.generation(id: "a0"))
            #expect(stored.keyID == "k1" && stored.upstreamID == nil && stored.providerName == "Alpha")
            #expect(
                stored.usage == batch[0].generation.usage && stored.cost == usd("0.01") && stored.attempts == batch[0].generation.attempts)
            let entries = try await store.entries(account: "b", limit: 100).filter { $0.kind == .charge }
            #expect(
                entries.count == 20 && entries.allSatisfy { $0.keyID == "k1" && $0.memo == nil && $0.generationID?.hasPrefix("b") == true })
            #expect(try await store.settleInOneStatement(batch) == false)  // a replay: the general path skips it
            try await store.settle(batch)
            #expect(try await store.balance(account: "a") == AccountBalance(balance: usd("0.8"), available: usd("0.5")))
            #expect(try await store.balance(account: Billing.SystemAccount.provider("alpha")).balance == usd("0.4"))
            #expect(
                try await store.claimIdempotencyKey(
                    IdempotencyClaimRequest(
                        account: "a", key: "k", generationID: "x", fingerprint: "f", staleAfter: 60))
                    == .completed(generationID: "a0", response: "{}"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test func anEmptyOptionalTextTakesTheGeneralPathAndIsStoredAsSent() async throws {
        try await TestDatabase.withFreshLedger { store in
            try await store.createAccount(id: "a", name: "a")
            try await grant(store, "a", "1")
            _ = try await store.growLease(
                LeaseRequest(id: "lease-a", account: "a", minimum: usd("0.5"), desired: usd("0.5"), shareDivisor: 1, ttl: 600))
            try await store.requireAccounts([Billing.SystemAccount.provider("alpha")])
            var record = generation("g", account: "a", cost: usd("0.01"))
            record.upstreamID = ""  // a provider that answered with "id": ""
            let batch = [
                Settlement(
                    reservation: .lease(id: "lease-a", release: usd("0.01")), transfers: [charge("g", account: "a", "0.01")],
                    generation: record)
            ]
            #expect(try await store.settleInOneStatement(batch) == false)
            try await store.settle(batch)
            #expect(try await store.generation(id: "g")?.upstreamID == "")
            #expect(try await store.balance(account: "a").balance == usd("0.99"))
            #expect(try await store.verify().isConsistent)
        }
    }
}

/// The ledger is append-only and names only known accounts, in the database itself: raw SQL
/// that would rewrite history or invent an account is refused, whichever store holds it.
@Suite struct LedgerRefusesRawRewritesTests {
    static let rewrites = [
        "UPDATE transfers SET amount = amount + 1", "DELETE FROM transfers", "DELETE FROM accounts WHERE id = 'acct'",
        "UPDATE accounts SET id = 'renamed' WHERE id = 'acct'",
        """
        INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, created_at)
        VALUES ('raw', 'nobody', 'provider:alpha', 5, 'charge', 0)
        """,
    ]
    /// The audit trail is append-only too.
    static let auditRewrites = ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"]

    static func seeded(_ store: some LedgerStore) async throws {
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "1")
        try await settleUnreserved(
            store, transfers: [charge("g1", account: "acct", "0.1")],
            generation: generation("g1", account: "acct", cost: usd("0.1")), idempotency: nil)
        try await store.appendAudit(AuditEntry(actor: "key:a", role: .admin, action: .signIn, target: "console", node: "n"))
    }

    @Test func sqlite() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await Self.seeded(store)
        let statements = Self.rewrites.prefix(4) + Self.auditRewrites  // SQLite has no foreign keys switched on
        for statement in statements {
            await #expect(throws: (any Error).self, "\(statement)") { try await store.database.write { try $0.execute(sql: statement) } }
        }
        #expect(try await store.auditEntries(AuditQuery()).map(\.actor) == ["key:a"])
        #expect(try await store.verify().isConsistent)
        #expect(try await store.balance(account: "acct").balance == usd("0.9"))
        try await store.close()
    }

    @Test(.enabled(if: TestDatabase.required, "no PostgreSQL configured")) func postgres() async throws {
        try await TestDatabase.withFreshLedger { store in
            try await Self.seeded(store)
            for statement in Self.rewrites + Self.auditRewrites + ["TRUNCATE audit_log"] {
                await #expect(throws: (any Error).self, "\(statement)") {
                    try await store.client.query(PostgresQuery(unsafeSQL: statement), logger: store.logger)
                }
            }
            // The general path's own error for a transfer naming no account.
            await #expect(throws: LedgerError.unknownAccount("nobody")) {
                try await store.transaction { connection in
                    try await connection.query(
                        "INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, created_at) VALUES ('x', 'nobody', 'acct', 1, 'charge', 0)",
                        logger: store.logger)
                }
            }
            #expect(try await store.verify().isConsistent)
            #expect(try await store.balance(account: "acct").balance == usd("0.9"))
            #expect(try await store.auditEntries(AuditQuery()).map(\.actor) == ["key:a"])
        }
    }
}

/// `verify` names each broken invariant: the embedded ledger is damaged behind the store's back
/// (raw SQL, triggers dropped) and every check must notice.
@Suite struct VerifyCatchesBrokenInvariantsTests {
    @Test func everyInvariantIsCheckedAndNamed() async throws {
        let store = try await SQLiteLedgerStore.open(path: nil)
        try await store.createAccount(id: "acct", name: "A")
        try await grant(store, "acct", "1")
        try await settleUnreserved(
            store, transfers: [charge("g1", account: "acct", "0.1")],
            generation: generation("g1", account: "acct", cost: usd("0.1")), idempotency: nil)
        #expect(try await store.verify().isConsistent)
        try await store.database.write { db in
            try db.execute(sql: "DROP TRIGGER balances_customer_within_credit_update")
            try db.execute(sql: "UPDATE balances SET balance = balance + 7 WHERE account_id = 'platform:fees'")
            try db.execute(sql: "UPDATE generations SET cost = cost + 1 WHERE id = 'g1'")
            try db.execute(sql: "UPDATE generations SET attempts = '[]' WHERE id = 'g1'")
            try db.execute(sql: "INSERT INTO accounts (id, name, is_system, created_at) VALUES ('broke', 'B', 0, 0)")
            try db.execute(sql: "INSERT INTO balances (account_id, balance, held) VALUES ('broke', 0, 0)")
            try db.execute(
                sql: """
                    INSERT INTO transfers (idempotency_key, debit_account, credit_account, amount, kind, created_at)
                    VALUES ('raw', 'broke', 'provider:alpha', 5, 'charge', 0)
                    """)
            try db.execute(sql: "UPDATE balances SET balance = balance - 5 WHERE account_id = 'broke'")
            try db.execute(sql: "UPDATE balances SET balance = balance + 5 WHERE account_id = 'provider:alpha'")
            try db.execute(
                sql: """
                    INSERT INTO holds (id, account_id, amount, status, expires_at, created_at) VALUES ('old', 'acct', 3, 'pending', 0, 0)
                    """)
            try db.execute(sql: "UPDATE balances SET held = held + 3 WHERE account_id = 'acct'")
            try db.execute(sql: "UPDATE balances SET held = 2000000000 WHERE account_id = 'acct'")
        }
        let result = try await store.verify()
        #expect(!result.isConsistent)
        for name in LedgerVerification.Name.allCases {
            #expect(!result[name].holds, "\(name.rawValue) was not noticed")
        }
        #expect(result[.customerBalancesNonNegative].examples == ["broke"])
        #expect(result[.customerHeldWithinBalance].examples.contains("acct"))
        #expect(result[.noExpiredHoldPending].examples == ["old"])
        #expect(result[.chargesMatchGenerationCosts].examples.contains("g1"))
        #expect(result.json["invariants"]?.arrayValue?.count == LedgerVerification.Name.allCases.count)
        try await store.close()
    }
}
