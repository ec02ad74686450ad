import Foundation
import SignalboxCore

/// The result of `LedgerStore.verify()`: every invariant the ledger promises (Docs/ledger.md),
/// each with how many rows break it and a few of them by name, read from one snapshot.
public struct LedgerVerification: Sendable, Hashable {
    /// One promise and how the ledger keeps it.
    public struct Invariant: Sendable, Hashable {
        public var name: String
        public var violations: Int
        /// Up to `LedgerVerification.exampleLimit` accounts, generations or holds that break it.
        public var examples: [String]
        public var holds: Bool { violations == 0 }
    }

    /// The invariants, in the order Docs/ledger.md lists them.
    public enum Name: String, CaseIterable, Sendable {
        /// Each cached balance and held amount equals what its entries and pending holds add up to.
        case balancesMatchEntries = "balances_match_entries"
        /// All balances sum to zero (double entry).
        case balancesSumToZero = "balances_sum_to_zero"
        /// No customer balance is below zero.
        case customerBalancesNonNegative = "customer_balances_non_negative"
        /// No customer holds more than its balance.
        case customerHeldWithinBalance = "customer_held_within_balance"
        /// Every charge belongs to a generation, and a generation's charges equal its recorded cost.
        case chargesMatchGenerationCosts = "charges_match_generation_costs"
        /// What providers are owed for a generation (charge, overage, insurance) equals the provider
        /// costs its attempts recorded, and no payable exists without a generation.
        case providerPayablesMatchGenerations = "provider_payables_match_generations"
        /// No hold or lease is still pending after it expired (beyond the expiry job's interval).
        case noExpiredHoldPending = "no_expired_hold_pending"
    }

    public static let exampleLimit = 10
    /// A hold this long past its expiry should have been voided by some node's expiry job.
    public static let expiryGrace: TimeInterval = 120

    public private(set) var invariants: [Invariant] = Name.allCases.map { Invariant(name: $0.rawValue, violations: 0, examples: []) }
    public var transferCount = 0
    public var generationCount = 0
    public var accountCount = 0
    /// Sum of every account's balance: zero in a balanced double-entry ledger.
    public var totalOfBalances = Money.zero

    public init() {}

    public var isConsistent: Bool { invariants.allSatisfy(\.holds) }

    /// Accounts whose cached balance or held amount differs from their entries.
    public var mismatchedAccounts: [String] { self[.balancesMatchEntries].examples }

    public subscript(name: Name) -> Invariant { invariants[Name.allCases.firstIndex(of: name)!] }

    public mutating func violation(_ name: Name, _ example: String) {
        let index = Name.allCases.firstIndex(of: name)!
        invariants[index].violations += 1
        if invariants[index].examples.count < Self.exampleLimit { invariants[index].examples.append(example) }
    }

    /// Checks one account's row: cached against derived amounts, and the customer rules.
    public mutating func account(_ id: String, balance: Int64, held: Int64, derivedBalance: Int64, derivedHeld: Int64) {
        accountCount += 1
        totalOfBalances = totalOfBalances.adding(Money(nanos: balance)) ?? totalOfBalances
        if balance != derivedBalance || held != derivedHeld { violation(.balancesMatchEntries, id) }
        guard !Billing.SystemAccount.isSystem(id) else { return }
        if balance < 0 { violation(.customerBalancesNonNegative, id) }
        if held > balance || held < 0 { violation(.customerHeldWithinBalance, id) }
    }

    /// Checks one generation: its charges against its cost, its payables against its attempts.
    public mutating func generation(_ id: String, cost: Int64, charged: Int64, payable: Int64, attempts: String) {
        generationCount += 1
        if charged != cost { violation(.chargesMatchGenerationCosts, id) }
        let records = (try? JSONDecoder().decode([AttemptRecord].self, from: Data(attempts.utf8))) ?? []
        let recorded = records.reduce(Int64(0)) { $0 &+ $1.providerCost.nanos }
        if recorded != payable { violation(.providerPayablesMatchGenerations, id) }
    }

    /// Ends the run: the sum of balances, and rows that belong to no generation.
    public mutating func finish(transfers: Int, orphanCharges: [String], orphanPayables: [String], expiredHolds: [String]) {
        transferCount = transfers
        if totalOfBalances != .zero { violation(.balancesSumToZero, "sum \(totalOfBalances.decimalString)") }
        for entry in orphanCharges { violation(.chargesMatchGenerationCosts, entry) }
        for entry in orphanPayables { violation(.providerPayablesMatchGenerations, entry) }
        for hold in expiredHolds { violation(.noExpiredHoldPending, hold) }
    }

    /// The report `ledger verify --json` and `GET /api/v1/admin/ledger/verify` print.
    public var json: JSONValue {
        [
            "consistent": .bool(isConsistent), "transfers": .int(Int64(transferCount)),
            "mismatched_accounts": .array(mismatchedAccounts.map { .string($0) }),
            "sum_of_balances": .string(totalOfBalances.decimalString),
            "invariants": .array(
                invariants.map { invariant in
                    [
                        "name": .string(invariant.name), "holds": .bool(invariant.holds), "violations": .int(Int64(invariant.violations)),
                        "examples": .array(invariant.examples.map { .string($0) }),
                    ]
                }),
            "summary": [
                "accounts": .int(Int64(accountCount)), "generations": .int(Int64(generationCount)),
                "transfers": .int(Int64(transferCount)),
                "invariants_broken": .int(Int64(invariants.filter { !$0.holds }.count)),
            ],
        ]
    }
}
