import Foundation
import Ledger
import SignalboxCore

/// Every administrative change, in one place: the admin HTTP API, the console and the CLI all
/// come through here, so a role is checked the same way wherever the change is asked for, the
/// input is validated once (errors name the field in `metadata.param`), and each change is
/// written to the audit trail in the transaction that makes it (Docs/console.md).
public struct Administration: Sendable {
    public let ledger: any LedgerStore
    /// Routing tables live in the cluster's replicated state; nil on a node without gossip.
    let cluster: ClusterNode?
    /// What routing tables may name; nil where routing is not changed (the command line).
    let catalog: Catalog?
    /// Forgets cached keys once a key or an account changed, so the change applies at once here.
    let keysChanged: @Sendable () -> Void

    public init(ledger: any LedgerStore, cluster: ClusterNode?, catalog: Catalog?, keysChanged: @escaping @Sendable () -> Void = {}) {
        self.ledger = ledger
        self.cluster = cluster
        self.catalog = catalog
        self.keysChanged = keysChanged
    }

    /// 403 unless the actor's role allows `permission`.
    public static func require(_ permission: AdminPermission, of actor: AuditActor) throws(APIError) {
        guard let role = actor.role, role.allows(permission) else {
            let what =
                switch permission {
                case .read: "read the admin surfaces"
                case .billing: "change accounts, keys or credit"
                case .operations: "change routing, the cluster, admin keys or role mappings"
                }
            throw APIError(
                status: 403, message: "The \(actor.role?.rawValue ?? "no") role may not \(what)",
                metadata: ["reason": "role_forbids", "role": actor.role.map { .string($0.rawValue) } ?? .null])
        }
    }

    /// A 400 that names the field it is about, so the console can show it there.
    public static func invalid(_ field: String, _ message: String) -> APIError {
        APIError.badRequest(message, metadata: ["param": .string(field)])
    }

    func perform(_ change: AdminChange, by actor: AuditActor) async throws -> AdminOutcome {
        try Self.require(change.permission, of: actor)
        do {
            return try await ledger.perform(change, by: actor)
        } catch LedgerError.unknownAccount(let account) {
            throw APIError.notFound("Account \(account) not found")
        } catch LedgerError.idempotencyConflict(let key) {
            throw APIError(status: 409, message: "Reference \(key) was already used for a different amount")
        } catch LedgerError.balanceOutOfRange {
            throw APIError(status: 409, message: "This would take a balance beyond what the ledger can hold")
        } catch LedgerError.overdrawn {
            throw APIError(status: 409, message: "This would take the account below zero or below what it holds for requests in flight")
        }
    }

    // MARK: Accounts

    /// Creates a customer account; an id already taken is a 409.
    public func createAccount(name: String, id: String?, region: String?, by actor: AuditActor) async throws -> Account {
        let name = name.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { throw Self.invalid("name", "Give the account a name") }
        guard name.count <= 200 else { throw Self.invalid("name", "A name is at most 200 characters") }
        let id = id.flatMap { $0.isEmpty ? nil : $0 } ?? "acct-" + UUID().uuidString.lowercased().prefix(12)
        guard id.count <= 64, id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }),
            !Billing.SystemAccount.isSystem(id)
        else { throw Self.invalid("id", "An account id is up to 64 letters, digits, '-', '_' and '.'") }
        if let region { try Self.validateRegion(region, field: "region") }
        let outcome = try await perform(.createAccount(id: id, name: name, region: region), by: actor)
        guard outcome.changed, let account = outcome.account else { throw APIError(status: 409, message: "Account \(id) already exists") }
        return account
    }

    /// Pins an account to a region, or unpins it (nil).
    public func pinAccount(_ id: String, region: String?, by actor: AuditActor) async throws -> Account {
        if let region { try Self.validateRegion(region, field: "region") }
        let outcome = try await perform(.pinAccount(id: id, region: region), by: actor)
        guard outcome.found, let account = outcome.account else { throw APIError.notFound("Account \(id) not found") }
        keysChanged()
        return account
    }

    // MARK: Keys

    /// What a new key is to be.
    public struct KeyDraft: Sendable {
        public var account: String
        public var name: String
        public var limit: Money?
        public var limitReset: String?
        public var expiresAt: Date?
        public var region: String?
        /// Makes an operator key with this role (on the operator account) instead of a customer key.
        public var adminRole: AdminRole?

        public init(
            account: String, name: String, limit: Money? = nil, limitReset: String? = nil, expiresAt: Date? = nil,
            region: String? = nil, adminRole: AdminRole? = nil
        ) {
            self.account = account
            self.name = name
            self.limit = limit
            self.limitReset = limitReset
            self.expiresAt = expiresAt
            self.region = region
            self.adminRole = adminRole
        }
    }

    /// Creates a key; the secret is returned here once and never stored.
    public func createKey(_ draft: KeyDraft, by actor: AuditActor) async throws -> (record: KeyRecord, secret: String) {
        let name = draft.name.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { throw Self.invalid("name", "Give the key a name") }
        guard name.count <= 200 else { throw Self.invalid("name", "A name is at most 200 characters") }
        if let reset = draft.limitReset { try Self.validateLimitReset(reset) }
        if let region = draft.region { try Self.validateRegion(region, field: "region") }
        if let limit = draft.limit, limit < .zero || limit > .maximumAmount {
            throw Self.invalid("limit", "A limit is a non-negative amount up to \(Money.maximumAmount.decimalString) USD")
        }
        if draft.adminRole == nil {
            // Customer keys spend from customer accounts: never from the platform's or a provider's
            // balance, nor from the operator account.
            guard !Billing.SystemAccount.isSystem(draft.account), draft.account != KeyRecord.operatorAccount else {
                throw Self.invalid("account", "Give the customer account the key spends from ('\(draft.account)' is not one)")
            }
        } else {
            try Self.require(.operations, of: actor)
            // The account operator keys belong to, as every node's start creates it (not an audited change).
            try await ledger.createAccount(id: KeyRecord.operatorAccount, name: "Operator")
        }
        let secret = APIKeyFormat.generate()
        let hash = APIKeyFormat.hash(secret)
        // Operator keys live on the operator account, whatever account the draft named.
        let record = KeyRecord(
            id: "key-" + String(hash.prefix(16)), accountID: draft.adminRole == nil ? draft.account : KeyRecord.operatorAccount, hash: hash,
            label: APIKeyFormat.label(secret), name: name,
            adminRole: draft.adminRole, limit: draft.limit, limitReset: draft.limitReset, expiresAt: draft.expiresAt, region: draft.region)
        let outcome = try await perform(.createKey(record), by: actor)
        return (outcome.key ?? record, secret)
    }

    /// Changes a key; 404 when no key has this hash.
    public func updateKey(hash: String, _ update: KeyUpdate, by actor: AuditActor) async throws -> KeyRecord {
        if let name = update.name, name.trimmingCharacters(in: .whitespaces).isEmpty || name.count > 200 {
            throw Self.invalid("name", "A name is 1 to 200 characters")
        }
        if let reset = update.limitReset ?? nil { try Self.validateLimitReset(reset) }
        if let region = update.region ?? nil { try Self.validateRegion(region, field: "region") }
        if let limit = update.limit ?? nil, limit < .zero || limit > .maximumAmount {
            throw Self.invalid("limit", "A limit is a non-negative amount up to \(Money.maximumAmount.decimalString) USD")
        }
        // Changing an operator key is changing who may do what: it needs the operations permission.
        if let existing = try await ledger.key(hash: hash), existing.isAdmin {
            try Self.require(.operations, of: actor)
        }
        let outcome = try await perform(.updateKey(hash: hash, update), by: actor)
        guard outcome.found, let key = outcome.key else { throw APIError.notFound("Key not found") }
        keysChanged()
        return key
    }

    public func deleteKey(hash: String, by actor: AuditActor) async throws {
        if let existing = try await ledger.key(hash: hash), existing.isAdmin { try Self.require(.operations, of: actor) }
        let outcome = try await perform(.deleteKey(hash: hash), by: actor)
        guard outcome.found else { throw APIError.notFound("Key not found") }
        keysChanged()
    }

    // MARK: Credit

    public enum CreditKind: String, Sendable, CaseIterable {
        case purchase, grant
    }

    /// What adding credit did.
    public struct CreditResult: Sendable {
        public var credit: Money
        public var fee: Money
        public var reference: String
        public var balance: Money
        /// The reference was used before for the same amount: nothing new was recorded.
        public var alreadyRecorded: Bool
        public var charged: Money { credit + fee }
    }

    /// A purchase (with the platform fee beside it) or a grant; the reference makes retries safe.
    public func addCredit(
        account: String, amount: Money, kind: CreditKind, reference: String?, by actor: AuditActor
    ) async throws -> CreditResult {
        guard amount > .zero, amount <= .maximumAmount else {
            throw Self.invalid("amount", "The amount is a positive number of USD up to \(Money.maximumAmount.decimalString)")
        }
        let reference = reference.flatMap { $0.isEmpty ? nil : $0 } ?? UUID().uuidString
        guard reference.count <= 200 else { throw Self.invalid("reference", "A reference is at most 200 characters") }
        guard try await ledger.account(id: account)?.isSystem == false else { throw APIError.notFound("Account \(account) not found") }
        let (transfers, action): ([TransferRequest], AuditAction) =
            switch kind {
            case .purchase: (TransferRequest.purchase(account: account, credit: amount, reference: reference), .creditPurchased)
            case .grant: ([TransferRequest.grant(account: account, credit: amount, reference: reference)], .creditGranted)
            }
        let outcome = try await perform(.post(action, account: account, transfers), by: actor)
        let balance = try await ledger.balance(account: account)
        return CreditResult(
            credit: amount, fee: kind == .purchase ? Billing.purchaseFee(for: amount) : .zero, reference: reference,
            balance: balance.balance, alreadyRecorded: outcome.recorded == 0)
    }

    /// Posts the reversal of entry `id` (the entry itself is never edited); a second reversal of
    /// the same entry is a no-op.
    public func reverse(entry id: Int64, reason: String, by actor: AuditActor) async throws -> (reversal: TransferRequest, recorded: Bool) {
        let reason = reason.trimmingCharacters(in: .whitespaces)
        guard !reason.isEmpty, reason.count <= 500 else { throw Self.invalid("reason", "Say why, in up to 500 characters") }
        guard let original = try await ledger.entries(EntryQuery(transferID: id, limit: 1)).first?.transfer else {
            throw APIError.notFound("No entry \(id)")
        }
        guard original.kind != .reversal else { throw APIError(status: 409, message: "Entry \(id) is itself a reversal") }
        let reversal = TransferRequest(
            idempotencyKey: "reversal:\(original.id)", debit: original.creditAccount, credit: original.debitAccount,
            amount: original.amount, kind: .reversal, keyID: original.keyID, generationID: original.generationID,
            memo: "\(reason) (reverses entry \(original.id))")
        let customer =
            [original.debitAccount, original.creditAccount].first { !Billing.SystemAccount.isSystem($0) } ?? original.debitAccount
        let outcome = try await perform(.post(.entryReversed, account: customer, [reversal]), by: actor)
        return (reversal, outcome.recorded > 0)
    }

    // MARK: Routing and roles

    /// Sets a region's routing table cluster-wide, and records it.
    public func setRoutingTable(region: String, allowed: [String], preferred: [String], by actor: AuditActor) async throws
        -> RegionRoutingTable
    {
        try Self.require(.operations, of: actor)
        guard let cluster, let catalog else {
            throw APIError(status: 409, message: "Routing tables are shared through the cluster; start the node with --gossip-bind")
        }
        try Self.validateRegion(region, field: "region")
        let known = Set(catalog.providers.keys).union(catalog.models.flatMap { $0.endpoints.map(\.tag) })
        for (field, items) in [("allowed", allowed), ("preferred", preferred)] {
            if let unknown = items.first(where: { !known.contains($0) }) {
                throw Self.invalid(field, "'\(unknown)' in '\(field)' is neither a provider slug nor an endpoint tag")
            }
        }
        let before = cluster.table(for: region)
        let wasSet = cluster.tableIsSet(for: region)
        let table = RegionRoutingTable(allowed: allowed, preferred: preferred)
        try await cluster.setTable(table, for: region)
        try await ledger.appendAudit(
            AuditEntry(
                actor, action: .routingChanged, target: region, before: wasSet ? Self.tableJSON(before) : nil, after: Self.tableJSON(table))
        )
        return table
    }

    static func tableJSON(_ table: RegionRoutingTable) -> JSONValue {
        .object(["allowed": .array(table.allowed.map { .string($0) }), "preferred": .array(table.preferred.map { .string($0) })])
    }

    /// Gives single-sign-on users matching a rule a role, or removes the rule (nil).
    public func setRoleMapping(_ claim: RoleMapping.Claim, value: String, role: AdminRole?, by actor: AuditActor) async throws {
        let value = value.trimmingCharacters(in: .whitespaces)
        guard !value.isEmpty, value.count <= 200, !value.contains(where: \.isNewline) else {
            throw Self.invalid("value", "A group or email domain is 1 to 200 characters on one line")
        }
        if claim == .emailDomain, value.contains("@") || value.contains(where: \.isWhitespace) {
            throw Self.invalid("value", "An email domain is the part after the @, e.g. example.com")
        }
        _ = try await perform(.setRoleMapping(claim, value: claim == .emailDomain ? value.lowercased() : value, role: role), by: actor)
    }

    // MARK: Validation

    public static func validateRegion(_ region: String, field: String) throws(APIError) {
        guard !region.isEmpty, region.count <= 64,
            region.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else { throw invalid(field, "A region name is letters, digits, '-' and '_'") }
    }

    public static func validateLimitReset(_ reset: String) throws(APIError) {
        guard ["daily", "weekly", "monthly"].contains(reset) else {
            throw invalid("limit_reset", "'limit_reset' must be daily, weekly or monthly")
        }
    }
}
