// The settlement committer alone against a ledger: how many settlements per second it commits
// when many requests finish at once, on PostgreSQL (a fresh database on the server at
// SIGNALBOX_TEST_DATABASE_URL) and on the embedded SQLite ledger, side by side in one run.
//
// Usage: ledger-bench [settlements (100000)] [accounts (64)] [concurrent submitters (1024)]
//                     [largest batch (512)] [batches in flight (2)] — the committer's defaults
// Benchmarks/ledger.sh builds it in release, starts a throwaway PostgreSQL and runs it.
import Foundation
import Ledger
import Logging
import SignalboxCore
import SignalboxTestKit

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let total = arguments.first ?? 100_000
let accounts = arguments.dropFirst().first ?? 64
let submitters = arguments.dropFirst(2).first ?? 1024
let maxBatch = arguments.dropFirst(3).first ?? 512
let maxInFlight = arguments.dropFirst(4).first ?? 2
let logger: Logger = {
    var logger = Logger(label: "ledger-bench")
    logger.logLevel = .warning
    return logger
}()

/// One settlement as a request on a lease produces it: a charge, its generation, the lease release.
func settlement(_ index: Int, run: String) -> Settlement {
    let account = "bench-\(index % accounts)"
    let id = "gen-\(run)-\(index)"
    let cost = Money(nanos: 10_000 + Int64(index % 977))
    let generation = GenerationRecord(
        id: id, accountID: account, keyID: "key-\(index % accounts)", model: "openai/gpt-4o-mini", providerName: "OpenAI",
        providerTag: "openai", upstreamID: "chatcmpl-\(index)", streamed: index % 2 == 0, cancelled: false, finishReason: "stop",
        nativeFinishReason: "stop", usage: TokenUsage(promptTokens: 40, completionTokens: 16), cost: cost, latencyMs: 120,
        generationTimeMs: 80,
        attempts: [
            AttemptRecord(
                provider: "openai", providerName: "OpenAI", model: "openai/gpt-4o-mini",
                status: "200", latencyMs: 120, providerCost: cost)
        ],
        createdAt: Date())
    return Settlement(
        reservation: .lease(id: "lease-\(account)", release: cost),
        transfers: [
            TransferRequest(
                idempotencyKey: "charge:" + id, debit: account, credit: Billing.SystemAccount.provider("openai"),
                amount: cost, kind: .charge, keyID: generation.keyID, generationID: id)
        ],
        generation: generation)
}

func measure(_ label: String, _ store: any LedgerStore) async throws {
    for index in 0..<accounts {
        let account = "bench-\(index)"
        try await store.createAccount(id: account, name: account)
        try await store.post([TransferRequest.grant(account: account, credit: Money(dollars: 10_000), reference: "bench-\(account)")])
        _ = try await store.growLease(
            LeaseRequest(
                id: "lease-\(account)", account: account, minimum: Money(dollars: 9_000),
                desired: Money(dollars: 9_000), shareDivisor: 1, ttl: 3600))
    }
    let run = UUID().uuidString.prefix(8)
    // Warm up (connections, prepared plans), then measure.
    let warm = SettlementCommitter(store: store, spool: nil, timeout: .seconds(30), logger: logger)
    for index in 0..<min(2_000, total) { _ = await warm.submit(settlement(index, run: "warm-\(run)")) }
    let committer = SettlementCommitter(
        store: store, spool: nil, maxBatch: maxBatch, maxInFlight: maxInFlight,
        timeout: .seconds(30), logger: logger)
    let clock = ContinuousClock()
    let started = clock.now
    let failures = await withTaskGroup(of: Int.self) { group in
        for submitter in 0..<submitters {
            group.addTask {
                var failed = 0
                var index = submitter
                while index < total {
                    if await committer.submit(settlement(index, run: String(run))) != .committed { failed += 1 }
                    index += submitters
                }
                return failed
            }
        }
        return await group.reduce(0, +)
    }
    let seconds = Double((clock.now - started).components.attoseconds) / 1e18 + Double((clock.now - started).components.seconds)
    let status = await committer.currentStatus
    let verification = try await store.verify()
    print(
        String(
            format: "%@: %d settlements in %.2f s = %.0f settlements/s, %d batches (mean %.1f), %d failed, verify %@",
            label, total, seconds, Double(total) / seconds, status.committedBatches,
            Double(status.committedSettlements) / Double(max(1, status.committedBatches)), failures,
            verification.isConsistent ? "consistent" : "BROKEN"))
    guard failures == 0, verification.isConsistent else { exit(1) }
}

if TestDatabase.url != nil {
    try await TestDatabase.withFreshLedger { try await measure("PostgreSQL", $0) }
} else {
    print("PostgreSQL: skipped (set SIGNALBOX_TEST_DATABASE_URL)")
}
let path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-bench-\(UUID().uuidString).sqlite").path
let sqlite = try await SQLiteLedgerStore.open(path: path)
try await measure("SQLite (embedded)", sqlite)
try await sqlite.close()
