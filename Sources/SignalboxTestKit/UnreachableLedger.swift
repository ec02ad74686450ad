import Foundation
import Ledger
import NIOConcurrencyHelpers
import SignalboxCore

/// A ledger that can be cut off: while `isDown`, every call fails the way an unreachable
/// database does; otherwise each call goes to the wrapped store. Tests use it to take the
/// ledger away from a running node and give it back.
public final class UnreachableLedger: LedgerStore {
    public let store: any LedgerStore
    private let down = NIOLockedValueBox(false)
    private let poisoned = NIOLockedValueBox<Set<String>>([])

    public init(_ store: any LedgerStore) { self.store = store }

    public var isDown: Bool {
        get { down.withLockedValue { $0 } }
        set { down.withLockedValue { $0 = newValue } }
    }

    /// Settlements of these generations fail every commit with a storage error (not a refusal),
    /// as a record the database chokes on would.
    public var poison: Set<String> {
        get { poisoned.withLockedValue { $0 } }
        set { poisoned.withLockedValue { $0 = newValue } }
    }

    private func reach() throws {
        if isDown { throw LedgerError.unreachable("connection refused (test)") }
    }

    public func migrate() async throws {
        try reach()
        try await store.migrate()
    }
    public func close() async throws { try await store.close() }
    @discardableResult
    public func createAccount(id: String, name: String) async throws -> Account {
        try reach()
        return try await store.createAccount(id: id, name: name)
    }
    public func account(id: String) async throws -> Account? {
        try reach()
        return try await store.account(id: id)
    }
    @discardableResult
    public func post(_ transfers: [TransferRequest]) async throws -> Int {
        try reach()
        return try await store.post(transfers)
    }
    @discardableResult
    public func settle(_ batch: [Settlement]) async throws -> SettlementResult {
        try reach()
        let poison = self.poison
        if let bad = batch.first(where: { poison.contains($0.generation.id) }) {
            throw LedgerError.storage("simulated: the database cannot store \(bad.generation.id)")
        }
        return try await store.settle(batch)
    }
    public func growLease(_ request: LeaseRequest) async throws -> LeaseGrant {
        try reach()
        return try await store.growLease(request)
    }
    public func shrinkLease(id: String, by amount: Money, ttl: TimeInterval, close: Bool) async throws -> Money? {
        try reach()
        return try await store.shrinkLease(id: id, by: amount, ttl: ttl, close: close)
    }
    public func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim {
        try reach()
        return try await store.claimIdempotencyKey(request)
    }
    public func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool {
        try reach()
        return try await store.renewIdempotencyClaim(account: account, key: key, generationID: generationID)
    }
    public func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws {
        try reach()
        try await store.releaseIdempotencyClaim(account: account, key: key, generationID: generationID)
    }
    public func openLeaseAmount(id: String) async throws -> Money? {
        try reach()
        return try await store.openLeaseAmount(id: id)
    }
    public func expireLeases() async throws -> Int {
        try reach()
        return try await store.expireLeases()
    }
    public func returnLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int {
        try reach()
        return try await store.returnLeftoverLeases(nodeID: nodeID, createdBefore: createdBefore)
    }
    public func balance(account: String) async throws -> AccountBalance {
        try reach()
        return try await store.balance(account: account)
    }
    public func entries(_ query: EntryQuery) async throws -> [LedgerEntry] {
        try reach()
        return try await store.entries(query)
    }
    public func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow] {
        try reach()
        return try await store.spend(query, by: grouping)
    }
    public func creditTotals(account: String) async throws -> (credits: Money, usage: Money) {
        try reach()
        return try await store.creditTotals(account: account)
    }
    public func purchasedTotal(account: String) async throws -> Money {
        try reach()
        return try await store.purchasedTotal(account: account)
    }
    public func verify() async throws -> LedgerVerification {
        try reach()
        return try await store.verify()
    }
    public func insertKey(_ key: KeyRecord) async throws {
        try reach()
        try await store.insertKey(key)
    }
    public func key(hash: String) async throws -> KeyRecord? {
        try reach()
        return try await store.key(hash: hash)
    }
    public func keys(account: String) async throws -> [KeyRecord] {
        try reach()
        return try await store.keys(account: account)
    }
    public func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord? {
        try reach()
        return try await store.updateKey(hash: hash, name: name, disabled: disabled, limit: limit, limitReset: limitReset)
    }
    public func setRegion(account: String, region: String?) async throws -> Bool {
        try reach()
        return try await store.setRegion(account: account, region: region)
    }
    public func setRegion(keyHash: String, region: String?) async throws -> KeyRecord? {
        try reach()
        return try await store.setRegion(keyHash: keyHash, region: region)
    }
    public func deleteKey(hash: String) async throws -> Bool {
        try reach()
        return try await store.deleteKey(hash: hash)
    }
    public func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool {
        try reach()
        return try await store.setKeyDisabled(id: id, disabled: disabled)
    }
    public func keyUsage(keyID: String, now: Date) async throws -> KeyUsage {
        try reach()
        return try await store.keyUsage(keyID: keyID, now: now)
    }
    public func freeRequestCount(account: String, since: [Date]) async throws -> [Int] {
        try reach()
        return try await store.freeRequestCount(account: account, since: since)
    }
    public func generation(id: String) async throws -> GenerationRecord? {
        try reach()
        return try await store.generation(id: id)
    }
    public func key(id: String) async throws -> KeyRecord? {
        try reach()
        return try await store.key(id: id)
    }
    public func accounts(_ query: AccountQuery) async throws -> [AccountSummary] {
        try reach()
        return try await store.accounts(query)
    }
    public func perform(_ change: AdminChange, by actor: AuditActor) async throws -> AdminOutcome {
        try reach()
        return try await store.perform(change, by: actor)
    }
    @discardableResult
    public func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry {
        try reach()
        return try await store.appendAudit(entry)
    }
    public func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry] {
        try reach()
        return try await store.auditEntries(query)
    }
    public func roleMappings() async throws -> [RoleMapping] {
        try reach()
        return try await store.roleMappings()
    }
}
