import Foundation
import SignalboxCore

/// Why the ledger refused or failed an operation. `isRefusal` separates what retrying cannot fix
/// (bad data, an overdraft) from an unreachable or failing database.
public enum LedgerError: Error, Sendable, Hashable, CustomStringConvertible {
    case unknownAccount(String)
    case unknownHold(String)
    case idempotencyConflict(String)
    case invalidAmount(Money)
    /// The entry would take a customer's balance below zero or below what it holds.
    case overdrawn(String)
    /// The entry would take a balance outside the 64-bit range.
    case balanceOutOfRange(String)
    case storage(String)
    /// The ledger did not answer in time (PostgreSQL down or unreachable).
    case unreachable(String)
    /// The database was migrated by a newer binary than this one.
    case schemaNewer(found: Int, known: Int)

    /// The ledger refused the data itself (as opposed to not being reachable): retrying the
    /// same write can never succeed.
    public var isRefusal: Bool {
        switch self {
        case .unknownAccount, .unknownHold, .idempotencyConflict, .invalidAmount, .overdrawn,
            .balanceOutOfRange:
            true
        case .storage, .unreachable, .schemaNewer: false
        }
    }

    public var description: String {
        switch self {
        case .unknownAccount(let id): return "unknown account \(id)"
        case .unknownHold(let id): return "unknown hold \(id)"
        case .idempotencyConflict(let key): return "idempotency key \(key) was used for a different transfer"
        case .invalidAmount(let amount): return "invalid amount \(amount) (every entry is positive and at most \(Money.maximumAmount))"
        case .overdrawn(let account): return "account \(account) cannot go below zero or below what it holds"
        case .balanceOutOfRange(let account): return "the balance of \(account) would leave the ledger's range"
        case .storage(let message): return "ledger storage error: \(message)"
        case .unreachable(let message): return "ledger unreachable: \(message)"
        case .schemaNewer(let found, let known):
            return "the ledger schema is at version \(found), newer than the \(known) this binary knows: "
                + "run a binary of the version that migrated it (or newer); this one refuses to use it"
        }
    }
}
