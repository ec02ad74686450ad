import Foundation
import SignalboxCore

/// Filters for ledger entry and spend queries; nil fields do not filter.
public struct EntryQuery: Sendable, Hashable {
    /// Entries where the account is on either side.
    public var account: String?
    public var keyID: String?
    /// The model of the request an entry belongs to (from its generation record).
    public var model: String?
    /// A provider slug: entries to or from `provider:<slug>`.
    public var provider: String?
    public var kind: TransferKind?
    public var generationID: String?
    /// One entry by its id.
    public var transferID: Int64?
    /// Entries created at or after this time.
    public var since: Date?
    /// Entries created before this time.
    public var until: Date?
    /// Most recent first, at most this many (entry queries only).
    public var limit: Int

    public init(account: String? = nil, keyID: String? = nil, model: String? = nil, provider: String? = nil,
                kind: TransferKind? = nil, generationID: String? = nil, transferID: Int64? = nil, since: Date? = nil,
                until: Date? = nil, limit: Int = 100) {
        self.transferID = transferID
        self.account = account
        self.keyID = keyID
        self.model = model
        self.provider = provider
        self.kind = kind
        self.generationID = generationID
        self.since = since
        self.until = until
        self.limit = limit
    }

    /// A bound value of a query.
    public enum Value: Sendable, Hashable {
        case text(String)
        case integer(Int64)
    }

    /// The `WHERE` conditions over `transfers t LEFT JOIN generations g`, with `placeholder(n)`
    /// naming the n-th (1-based) bound value: `?` for SQLite, `$n` for PostgreSQL.
    public func conditions(placeholder: (Int) -> String) -> (sql: String, values: [Value]) {
        var clauses: [String] = []
        var values: [Value] = []
        func bind(_ value: Value) -> String {
            values.append(value)
            return placeholder(values.count)
        }
        if let account {
            clauses.append("(t.debit_account = \(bind(.text(account))) OR t.credit_account = \(bind(.text(account))))")
        }
        if let keyID { clauses.append("t.key_id = \(bind(.text(keyID)))") }
        if let model { clauses.append("g.model = \(bind(.text(model)))") }
        if let provider {
            let account = Billing.SystemAccount.provider(provider)
            clauses.append("(t.debit_account = \(bind(.text(account))) OR t.credit_account = \(bind(.text(account))))")
        }
        if let kind { clauses.append("t.kind = \(bind(.text(kind.rawValue)))") }
        if let generationID { clauses.append("t.generation_id = \(bind(.text(generationID)))") }
        if let transferID { clauses.append("t.id = \(bind(.integer(transferID)))") }
        if let since { clauses.append("t.created_at >= \(bind(.integer(Int64(since.timeIntervalSince1970 * 1000))))") }
        if let until { clauses.append("t.created_at < \(bind(.integer(Int64(until.timeIntervalSince1970 * 1000))))") }
        return (clauses.isEmpty ? "1 = 1" : clauses.joined(separator: " AND "), values)
    }
}

/// A posted transfer with the request it belongs to, as admin queries and exports show it.
public struct LedgerEntry: Sendable, Hashable, Codable {
    public var transfer: Transfer
    /// The model of the entry's request, when it belongs to one.
    public var model: String?

    public init(transfer: Transfer, model: String?) {
        self.transfer = transfer
        self.model = model
    }

    /// The provider slug on either side (`provider:<slug>`), if any.
    public var provider: String? {
        for account in [transfer.creditAccount, transfer.debitAccount] where account.hasPrefix("provider:") {
            return String(account.dropFirst("provider:".count))
        }
        return nil
    }
}

/// How `spend` groups charges.
public enum SpendGrouping: String, Sendable, Hashable, CaseIterable, Codable {
    /// UTC calendar day (`YYYY-MM-DD`).
    case day
    case model
    case provider
    case key
    case account
}

/// Charges summed over one group.
public struct SpendRow: Sendable, Hashable, Codable {
    public var group: String
    public var amount: Money
    /// Charged requests in the group.
    public var requests: Int

    public init(group: String, amount: Money, requests: Int) {
        self.group = group
        self.amount = amount
        self.requests = requests
    }
}

/// A lease row's state: `pending` while open, `voided` once closed, returned or expired.
/// (`posted` marks the per-request holds of earlier versions that were charged.)
public enum HoldStatus: String, Sendable, Codable { case pending, posted, voided }

/// A request about to run claims its `Idempotency-Key` with this.
public struct IdempotencyClaimRequest: Sendable, Hashable {
    public var account: String
    public var key: String
    /// The request's generation id: the claim's owner, the only one that may complete or release it.
    public var generationID: String
    /// A digest of what was asked (the API key and the body): a reuse with another request is refused.
    public var fingerprint: String
    /// A pending claim not renewed for this long (its node died) is taken over, by the ledger's clock.
    public var staleAfter: TimeInterval

    public init(account: String, key: String, generationID: String, fingerprint: String, staleAfter: TimeInterval) {
        self.account = account
        self.key = key
        self.generationID = generationID
        self.fingerprint = fingerprint
        self.staleAfter = staleAfter
    }
}

/// What a request's `Idempotency-Key` claim found.
public enum IdempotencyClaim: Sendable, Hashable {
    /// The key is now this request's.
    case claimed
    /// Another request with the key is running.
    case inProgress(generationID: String)
    /// A request with the key already succeeded: its generation and response.
    case completed(generationID: String, response: String)
    /// The key was used for a different request (another body or API key).
    case reused(generationID: String)
}

/// How a settlement closes the request's `Idempotency-Key` claim, in the same transaction. Only
/// the claim's owner (the settlement's generation) closes it: a settlement whose claim was taken
/// over meanwhile is a conflict, its charge refused and booked as overage (`Settlement.refusingCharges`).
public enum IdempotencyOutcome: Sendable, Hashable, Codable {
    /// The request succeeded: keep its response for retries.
    case completed(account: String, key: String, response: String)
    /// The request failed and charged nothing: a retry may run it again.
    case released(account: String, key: String)

    public var account: String {
        switch self {
        case .completed(let account, _, _), .released(let account, _): account
        }
    }

    public var key: String {
        switch self {
        case .completed(_, let key, _), .released(_, let key): key
        }
    }
}

/// The reservation a settlement draws on.
public enum Reservation: Sendable, Hashable, Codable {
    /// A node's lease on the account: shrunk by `release` (what the request spent plus any unused
    /// credit the node gives back), never below zero, and left open for later requests.
    case lease(id: String, release: Money)
}

/// Everything one finished request writes to the ledger, in one unit: its charge and insurance
/// transfers, its generation record, its reservation's release and its idempotency claim.
public struct Settlement: Sendable, Hashable, Codable {
    public var reservation: Reservation?
    public var transfers: [TransferRequest]
    public var generation: GenerationRecord
    public var idempotency: IdempotencyOutcome?

    public init(reservation: Reservation?, transfers: [TransferRequest], generation: GenerationRecord,
                idempotency: IdempotencyOutcome? = nil) {
        self.reservation = reservation
        self.transfers = transfers
        self.generation = generation
        self.idempotency = idempotency
    }

    private enum CodingKeys: String, CodingKey { case reservation, transfers, generation, idempotency }
    private enum LegacyReservationKeys: String, CodingKey { case hold }

    /// A spool written by a version with per-request holds may carry `{"hold": …}`: it settles
    /// with no reservation (its charge still posts; the hold itself expires in the ledger).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let legacy = try? container.nestedContainer(keyedBy: LegacyReservationKeys.self, forKey: .reservation),
           legacy.contains(.hold) {
            reservation = nil
        } else {
            reservation = try container.decodeIfPresent(Reservation.self, forKey: .reservation)
        }
        transfers = try container.decode([TransferRequest].self, forKey: .transfers)
        generation = try container.decode(GenerationRecord.self, forKey: .generation)
        idempotency = try container.decodeIfPresent(IdempotencyOutcome.self, forKey: .idempotency)
    }
}

extension Settlement {
    /// The settlement of a request whose `Idempotency-Key` another request took over while it
    /// ran (its node was thought dead): the retry is the one the client pays for, so this one's
    /// customer charges become the operator's overage, its recorded cost zero, and the claim is
    /// left to its new owner. The provider is still paid for the tokens it served.
    public func refusingCharges() -> Settlement {
        var copy = self
        copy.idempotency = nil
        copy.generation.cost = .zero
        copy.transfers = transfers.map { transfer in
            guard !Billing.SystemAccount.isSystem(transfer.debitAccount) else { return transfer }
            return TransferRequest(
                idempotencyKey: "conflict:" + transfer.idempotencyKey, debit: Billing.SystemAccount.overage,
                credit: transfer.creditAccount, amount: transfer.amount, kind: .overage, keyID: transfer.keyID,
                generationID: transfer.generationID, memo: "Idempotency-Key taken over; charge refused: " + (transfer.memo ?? ""))
        }
        return copy
    }

    /// A settlement whose reservation no longer backs it (its lease or hold expired and the
    /// credit may back other requests now): each customer debit is cut to what the account still
    /// has available, and the rest is booked as the operator's overage, so the provider is still
    /// paid in full and no customer goes below what it holds. The generation's recorded cost
    /// becomes what was charged. `available` is updated with what the cut transfers take.
    public func coveringShortfall(available: inout [String: Money]) -> Settlement {
        var result: [TransferRequest] = []
        var cutCharges = Money.zero
        for transfer in transfers {
            let payer = transfer.debitAccount
            guard !Billing.SystemAccount.isSystem(payer), let left = available[payer], transfer.amount > left else {
                if let left = available[payer] { available[payer] = left - transfer.amount }
                result.append(transfer)
                continue
            }
            let covered = max(.zero, left)
            var cut = transfer
            cut.amount = covered
            result.append(cut)
            available[payer] = left - covered
            if transfer.kind == .charge { cutCharges += transfer.amount - covered }
            result.append(TransferRequest(
                idempotencyKey: "overage:" + transfer.idempotencyKey, debit: Billing.SystemAccount.overage,
                credit: transfer.creditAccount, amount: transfer.amount - covered, kind: .overage, keyID: transfer.keyID,
                generationID: transfer.generationID, memo: "beyond an expired reservation: " + (transfer.memo ?? transfer.kind.rawValue)))
        }
        var copy = self
        copy.transfers = result
        copy.generation.cost = max(.zero, generation.cost - cutCharges)
        return copy
    }
}

/// What a settlement batch found.
public struct SettlementResult: Sendable, Hashable {
    /// Leases that were no longer open: the settlements on them were
    /// charged only what the account had available (`Settlement.coveringShortfall`).
    public var closedReservations: Set<String>

    public init(closedReservations: Set<String> = []) { self.closedReservations = closedReservations }
}

/// A node asking to grow its lease on an account's available credit.
public struct LeaseRequest: Sendable, Hashable {
    /// The lease's hold id; one per node and account at a time.
    public var id: String
    public var account: String
    /// Less than this is useless to the caller: grant nothing.
    public var minimum: Money
    /// What the caller would like; the grant is capped by `shareOfAvailable`.
    public var desired: Money
    /// The grant never takes more than this fraction (1/n) of the account's available credit
    /// beyond `minimum`, so several nodes can lease the same account as it runs low.
    public var shareDivisor: Int64
    /// The lease expires this long after the ledger grew it, by the ledger's clock: no node's
    /// clock decides when another node's lease ends.
    public var ttl: TimeInterval

    public init(id: String, account: String, minimum: Money, desired: Money, shareDivisor: Int64 = 4, ttl: TimeInterval) {
        self.id = id
        self.account = account
        self.minimum = minimum
        self.desired = desired
        self.shareDivisor = shareDivisor
        self.ttl = ttl
    }

    /// The grant for an account with `available` credit: nil when even `minimum` is not covered.
    /// Between `minimum` and `desired`, at most 1/`shareDivisor` of what is available.
    public func grant(available: Money) -> Money? {
        guard minimum >= .zero, available >= minimum else { return nil }
        let share = Money(nanos: available.nanos / max(1, shareDivisor))
        return min(available, max(minimum, min(desired, share)))
    }
}

/// The answer to a `LeaseRequest`.
public enum LeaseGrant: Sendable, Hashable {
    /// The lease grew by `added` and now reserves `total`.
    case granted(added: Money, total: Money)
    /// The account's available credit does not cover `minimum`.
    case insufficient(available: Money)
    /// The lease is no longer open (it expired and was voided): use a new lease id.
    case closed
}

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

    /// The ledger refused the data itself (as opposed to not being reachable): retrying the
    /// same write can never succeed.
    public var isRefusal: Bool {
        switch self {
        case .unknownAccount, .unknownHold, .idempotencyConflict, .invalidAmount, .overdrawn,
             .balanceOutOfRange: true
        case .storage, .unreachable: false
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
        }
    }
}

/// The credit ledger: double-entry, append-only transfers; leases on accounts' credit; keys and generation
/// records. SQLite (embedded, one node) and PostgreSQL (cluster) implement it and pass the same
/// contract tests.
public protocol LedgerStore: Sendable {
    /// Creates tables and system accounts; safe to call on every start.
    func migrate() async throws
    /// Closes connections; the store is unusable afterwards.
    func close() async throws

    /// Creates a customer account with the given id (idempotent) and returns it.
    @discardableResult
    func createAccount(id: String, name: String) async throws -> Account
    func account(id: String) async throws -> Account?

    /// Posts transfers atomically: all or none. A transfer whose idempotency key was already
    /// posted with the same content is skipped; with different content it fails.
    func post(_ transfers: [TransferRequest]) async throws

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

    /// Claims an `Idempotency-Key` for a request about to run. A pending claim not renewed within
    /// `staleAfter` by the ledger's clock (its node died) is taken over.
    func claimIdempotencyKey(_ request: IdempotencyClaimRequest) async throws -> IdempotencyClaim

    /// Keeps a long-running request's claim from going stale; false when it is no longer this
    /// generation's (taken over, or released).
    func renewIdempotencyClaim(account: String, key: String, generationID: String) async throws -> Bool

    /// Gives up a pending claim whose request never ran (refused before its first attempt).
    /// Only the owner's release counts.
    func releaseIdempotencyClaim(account: String, key: String, generationID: String) async throws

    /// What an open lease still reserves; nil once it is closed (given back, or voided at expiry
    /// by `expireHolds`) and for an unknown id.
    func openLeaseAmount(id: String) async throws -> Money?

    /// Voids the pending leases a node's previous run left (ids `lease:<nodeID>:…`, created
    /// before `createdBefore` by that node's clock): a restarted node gives them back at once
    /// instead of leaving the credit held until they expire. Returns how many.
    @discardableResult
    func voidLeftoverLeases(nodeID: String, createdBefore: Date) async throws -> Int

    /// Voids every pending hold and lease that expired, by the ledger's clock; returns how many.
    @discardableResult
    func expireHolds() async throws -> Int

    func balance(account: String) async throws -> AccountBalance
    /// Entries matching `query`, most recent first.
    func entries(_ query: EntryQuery) async throws -> [LedgerEntry]
    /// Charges (kind `charge`) matching `query`, summed per group, largest first.
    func spend(_ query: EntryQuery, by grouping: SpendGrouping) async throws -> [SpendRow]
    /// Total credited to an account by purchases and grants, and total charged to it.
    func creditTotals(account: String) async throws -> (credits: Money, usage: Money)
    /// Credit the account bought (purchases, without the fee): it decides free-tier limits.
    func purchasedTotal(account: String) async throws -> Money
    func verify() async throws -> LedgerVerification

    func insertKey(_ key: KeyRecord) async throws
    func key(hash: String) async throws -> KeyRecord?
    func keys(account: String) async throws -> [KeyRecord]
    /// Changes a key's name, disabled flag or limit (nil leaves a field as it is; `limit: .some(nil)`
    /// removes the limit); returns the updated key, nil when no key has that hash.
    func updateKey(hash: String, name: String?, disabled: Bool?, limit: Money??, limitReset: String??) async throws -> KeyRecord?
    /// Pins an account's requests to a region (nil unpins); false when there is no such account.
    @discardableResult
    func setRegion(account: String, region: String?) async throws -> Bool
    /// Pins a key's requests to a region (nil unpins); the updated key, nil when no key has that hash.
    func setRegion(keyHash: String, region: String?) async throws -> KeyRecord?
    /// Deletes a key; its past ledger entries keep its id. False when no key has that hash.
    func deleteKey(hash: String) async throws -> Bool
    /// Disables (revokes) or re-enables a key; false when no key has that id.
    @discardableResult
    func setKeyDisabled(id: String, disabled: Bool) async throws -> Bool
    func keyUsage(keyID: String, now: Date) async throws -> KeyUsage

    /// Requests an account made to `:free` models since each point in time (the free tier's
    /// per-minute and per-day counts).
    func freeRequestCount(account: String, since: [Date]) async throws -> [Int]

    func generation(id: String) async throws -> GenerationRecord?
}

extension LedgerStore {
    /// The account's most recent entries.
    public func entries(account: String, limit: Int) async throws -> [Transfer] {
        try await entries(EntryQuery(account: account, limit: limit)).map(\.transfer)
    }
}
