import Foundation
import SignalboxCore

/// The credit ledger, by job. A store implements all five (`LedgerStore`); a component asks only
/// for the one it uses, so what it can touch is in its type. SQLite (embedded, one node) and
/// PostgreSQL (cluster) implement them and pass the same contract tests.

/// The hot path: what a request reserves, what it settles, and its `Idempotency-Key`.
public protocol SettlementStore: Sendable {
    /// Settles finished requests, all in one transaction (group commit): for each, posts its
    /// transfers (the charge and any insurance entries), shrinks its lease, stores the
    /// generation record and closes the idempotency claim. The charge may exceed the reservation
    /// (the upstream's count decides), and an expired reservation still gets its charge: a charge
    /// is never skipped. Replays (a generation id already stored) are no-ops, so a batch may be
    /// committed twice. Returns the leases the batch found no longer open, so their owner stops
    /// using them at once.
    @discardableResult
    func settle(_ batch: [Settlement]) async throws -> SettlementResult

    /// Grows lease `request.id` (creating it when new) by what `LeaseRequest.grant(available:)`
    /// allows, in one conditional update, and moves its expiry to `request.ttl` from now by the
    /// ledger's clock.
    func growLease(_ request: LeaseRequest) async throws -> LeaseGrant

    /// Shrinks an open lease by `amount` (never below zero) and moves its expiry to `ttl` from now
    /// by the ledger's clock; voids it when `close` is set. Returns what the lease still reserves,
    /// nil when it is no longer open.
    @discardableResult
    func shrinkLease(id: String, by amount: Money, ttl: TimeInterval, close: Bool) async throws -> Money?

    /// What an open lease still reserves; nil once it is closed (given back, or voided at expiry
    /// by `expireLeases`) and for an unknown id.
    func openLeaseAmount(id: String) async throws -> Money?

    /// Voids the pending leases a node's previous run left (ids `lease:<nodeID>:…`, created
    /// before `createdBefore` by that node's clock): a restarted node gives them back at once
    /// instead of leaving the credit held until they expire. Returns how many.
    @discardableResult
    func returnLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int

    /// Voids every pending lease that expired, by the ledger's clock; returns how many.
    @discardableResult
    func expireLeases() async throws -> Int

    /// Claims an `Idempotency-Key` for a request about to run. A pending claim not renewed within
    /// `staleAfter` by the ledger's clock (its node died) is taken over.
    func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim

    /// Keeps a long-running request's claim from going stale; false when it is no longer this
    /// generation's (taken over, or released).
    func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool

    /// Gives up a pending claim whose request never ran (refused before its first attempt).
    /// Only the owner's release counts.
    func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws
}

/// Accounts, the transfers that fund them, and what they hold.
public protocol AccountStore: Sendable {
    /// Creates a customer account with the given id (idempotent) and returns it.
    @discardableResult
    func createAccount(id: String, name: String) async throws -> Account
    func account(id: String) async throws -> Account?

    /// Posts transfers atomically: all or none. A transfer whose idempotency key was already
    /// posted with the same content is skipped; with different content it fails. Returns how
    /// many were recorded now (0: a replay that changed nothing).
    @discardableResult
    func post(_ transfers: [TransferRequest]) async throws -> Int

    func balance(account: String) async throws -> AccountBalance
    /// Total credited to an account by purchases and grants, and total charged to it.
    func creditTotals(account: String) async throws -> (credits: Money, usage: Money)
    /// Credit the account bought (purchases, without the fee): it decides free-tier limits.
    func purchasedTotal(account: String) async throws -> Money
    /// Pins an account's requests to a region (nil unpins); false when there is no such account.
    @discardableResult
    func setRegion(account: String, region: String?) async throws -> Bool
    /// Requests an account made to `:free` models since each point in time (the free tier's
    /// per-minute and per-day counts).
    func freeRequestCount(account: String, since: [Date]) async throws -> [Int]
}

/// API keys: stored by the SHA-256 of their secret.
public protocol KeyStore: Sendable {
    func insertKey(_ key: KeyRecord) async throws
    func key(hash: String) async throws -> KeyRecord?
    /// The key with this id (`key-…`), nil when there is none.
    func key(id: String) async throws -> KeyRecord?
    func keys(account: String) async throws -> [KeyRecord]
    /// Changes a key's name, disabled flag or limit (nil leaves a field as it is; `limit: .some(nil)`
    /// removes the limit); returns the updated key, nil when no key has that hash.
    func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord?
    /// Pins a key's requests to a region (nil unpins); the updated key, nil when no key has that hash.
    func setRegion(keyHash: String, region: String?) async throws -> KeyRecord?
    /// Deletes a key; its past ledger entries keep its id. False when no key has that hash.
    func deleteKey(hash: String) async throws -> Bool
    /// Disables (revokes) or re-enables a key; false when no key has that id.
    @discardableResult
    func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool
    /// What the key spent in each limit window.
    func keyUsage(keyID: String, now: Date) async throws -> KeyUsage
}

/// What admins read: entries, spend, generations, and the invariants.
public protocol ReportStore: Sendable {
    /// Entries matching `query`, most recent first.
    func entries(_ query: EntryQuery) async throws -> [LedgerEntry]
    /// Every entry `query` matches (at most `query.limit`), newest first, handed over in pages
    /// of `pageSize` read by the id cursor from one snapshot of the ledger, so an export neither
    /// holds everything in memory nor misses a row that commits while it runs.
    func forEachEntry(_ query: EntryQuery, pageSize: Int, _ body: ([LedgerEntry]) async throws -> Void) async throws
    /// Charges (kind `charge`) matching `query`, summed per group, largest first.
    func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow]
    func generation(id: String) async throws -> GenerationRecord?
    /// Customer accounts with their balances, by id.
    func accounts(_ query: AccountQuery) async throws -> [AccountSummary]
    /// Checks every invariant in one snapshot (Docs/ledger.md).
    func verify() async throws -> LedgerVerification
}

/// A whole ledger: double-entry, append-only transfers; leases on accounts' credit; keys and
/// generation records.
public protocol LedgerStore: SettlementStore, AccountStore, KeyStore, ReportStore, AuditStore {
    /// Creates tables and system accounts; safe to call on every start.
    func migrate() async throws
    /// Closes connections; the store is unusable afterwards.
    func close() async throws
}

extension ReportStore {
    /// The account's most recent entries.
    public func entries(account: String, limit: Int) async throws -> [Transfer] {
        try await entries(EntryQuery(account: account, limit: limit)).map(\.transfer)
    }
}
