import Foundation
import SignalboxCore

/// Who made an administrative change, as the audit trail records it.
public struct AuditActor: Sendable, Hashable {
    /// `key:<key id>` for an admin key, `oidc:<issuer>#<subject>` for a single-sign-on user,
    /// `cli:<user>@<host>` for the command line, `anonymous` for a failed sign-in.
    public var id: String
    public var role: AdminRole?
    /// The node that made the change (`cli` for the command line).
    public var node: String
    /// The client's address, when the change came over HTTP.
    public var sourceAddress: String?

    public init(id: String, role: AdminRole?, node: String, sourceAddress: String? = nil) {
        self.id = id
        self.role = role
        self.node = node
        self.sourceAddress = sourceAddress
    }

    /// The actor id of an admin key.
    public static func key(_ key: KeyRecord) -> String { "key:\(key.id)" }
}

/// What was done, as the audit trail names it (Docs/console.md lists them).
public enum AuditAction: String, Sendable, Hashable, Codable, CaseIterable {
    case accountCreated = "account_created"
    case accountPinned = "account_pinned"
    case keyCreated = "key_created"
    case keyUpdated = "key_updated"
    case keyRevoked = "key_revoked"
    case keyDeleted = "key_deleted"
    case creditPurchased = "credit_purchased"
    case creditGranted = "credit_granted"
    case entryReversed = "entry_reversed"
    case routingChanged = "routing_changed"
    case roleMappingChanged = "role_mapping_changed"
    case signIn = "sign_in"
    case signInFailed = "sign_in_failed"
    case signOut = "sign_out"
}

/// One line of the audit trail: append-only, like the transfers.
public struct AuditEntry: Sendable, Hashable {
    public var id: Int64
    public var createdAt: Date
    public var actor: String
    public var role: AdminRole?
    public var action: AuditAction
    /// What the action was on: an account id, a key id, a region, a role mapping.
    public var target: String
    /// The target as it was and as it became (nil where there was nothing, as before a creation).
    public var before: JSONValue?
    public var after: JSONValue?
    public var node: String
    public var sourceAddress: String?

    public init(
        id: Int64 = 0, createdAt: Date = Date(), actor: String, role: AdminRole?, action: AuditAction, target: String,
        before: JSONValue? = nil, after: JSONValue? = nil, node: String, sourceAddress: String? = nil
    ) {
        self.id = id
        self.createdAt = createdAt
        self.actor = actor
        self.role = role
        self.action = action
        self.target = target
        self.before = before
        self.after = after
        self.node = node
        self.sourceAddress = sourceAddress
    }

    public init(_ actor: AuditActor, action: AuditAction, target: String, before: JSONValue? = nil, after: JSONValue? = nil) {
        self.init(
            actor: actor.id, role: actor.role, action: action, target: target, before: before, after: after, node: actor.node,
            sourceAddress: actor.sourceAddress)
    }
}

/// Filters for the audit trail; nil fields do not filter. Newest first, paged by id.
public struct AuditQuery: Sendable, Hashable {
    public var since: Date?
    public var until: Date?
    public var actor: String?
    public var action: AuditAction?
    public var target: String?
    public var limit: Int
    /// Only entries older than this id: the cursor of the next page.
    public var before: Int64?

    public init(
        since: Date? = nil, until: Date? = nil, actor: String? = nil, action: AuditAction? = nil, target: String? = nil,
        limit: Int = 100, before: Int64? = nil
    ) {
        self.since = since
        self.until = until
        self.actor = actor
        self.action = action
        self.target = target
        self.limit = limit
        self.before = before
    }

    /// The `WHERE` conditions over `audit_log`, with `placeholder(n)` naming the n-th bound value.
    public func conditions(placeholder: (Int) -> String) -> (sql: String, values: [EntryQuery.Value]) {
        var clauses: [String] = []
        var values: [EntryQuery.Value] = []
        func bind(_ value: EntryQuery.Value) -> String {
            values.append(value)
            return placeholder(values.count)
        }
        if let actor { clauses.append("actor = \(bind(.text(actor)))") }
        if let action { clauses.append("action = \(bind(.text(action.rawValue)))") }
        if let target { clauses.append("target = \(bind(.text(target)))") }
        if let before { clauses.append("id < \(bind(.integer(before)))") }
        if let since { clauses.append("created_at >= \(bind(.integer(Int64(since.timeIntervalSince1970 * 1000))))") }
        if let until { clauses.append("created_at < \(bind(.integer(Int64(until.timeIntervalSince1970 * 1000))))") }
        return (clauses.isEmpty ? "1 = 1" : clauses.joined(separator: " AND "), values)
    }
}

/// A rule that gives single-sign-on users a role: by a group in their ID token, or by their
/// email's domain. The most powerful role among the rules a user matches wins.
public struct RoleMapping: Sendable, Hashable {
    public enum Claim: String, Sendable, Hashable, CaseIterable {
        /// A value of the configured groups claim (`groups` by default).
        case group
        /// The part of a verified `email` after the `@`.
        case emailDomain = "email_domain"
    }

    public var claim: Claim
    public var value: String
    public var role: AdminRole

    public init(claim: Claim, value: String, role: AdminRole) {
        self.claim = claim
        self.value = value
        self.role = role
    }

    /// The audit trail's name for a rule.
    public var target: String { "\(claim.rawValue):\(value)" }
}

/// A change to a key: nil leaves a field as it is; `.some(nil)` clears an optional one.
public struct KeyUpdate: Sendable, Hashable {
    public var name: String?
    public var disabled: Bool?
    public var limit: Money??
    public var limitReset: String??
    public var region: String??

    public init(name: String? = nil, disabled: Bool? = nil, limit: Money?? = nil, limitReset: String?? = nil, region: String?? = nil) {
        self.name = name
        self.disabled = disabled
        self.limit = limit
        self.limitReset = limitReset
        self.region = region
    }

    /// What the audit trail calls this change.
    var action: AuditAction { disabled == true ? .keyRevoked : .keyUpdated }
}

/// An administrative change to the ledger database, run by `AuditStore.perform` together with
/// its audit entry in one transaction.
public enum AdminChange: Sendable, Hashable {
    /// Creates a customer account (a no-op when the id exists).
    case createAccount(id: String, name: String, region: String?)
    /// Pins an account to a region, or unpins it (nil).
    case pinAccount(id: String, region: String?)
    case createKey(KeyRecord)
    /// Changes the key with this hash.
    case updateKey(hash: String, KeyUpdate)
    case deleteKey(hash: String)
    /// Posts a purchase (`creditPurchased`), a grant (`creditGranted`) or a reversal
    /// (`entryReversed`) on `account`.
    case post(AuditAction, account: String, [TransferRequest])
    /// Sets the role of a role-mapping rule, or removes the rule (nil).
    case setRoleMapping(RoleMapping.Claim, value: String, role: AdminRole?)

    /// What an actor needs to make this change.
    public var permission: AdminPermission {
        switch self {
        case .createKey(let key) where key.isAdmin: .operations
        case .setRoleMapping: .operations
        default: .billing
        }
    }
}

/// What `perform` did. `changed` is false when there was nothing to do (an unknown key or
/// account, a replayed purchase, an account that already existed); then no audit entry is written.
public struct AdminOutcome: Sendable, Hashable {
    public var changed: Bool
    /// Whether the change's target exists (false: an unknown key or account).
    public var found: Bool
    public var account: Account?
    public var key: KeyRecord?
    /// Transfers recorded by a `.post`.
    public var recorded: Int
    /// The audit entry written, when something changed.
    public var audit: AuditEntry?

    public init(
        changed: Bool, found: Bool = true, account: Account? = nil, key: KeyRecord? = nil, recorded: Int = 0,
        audit: AuditEntry? = nil
    ) {
        self.changed = changed
        self.found = found
        self.account = account
        self.key = key
        self.recorded = recorded
        self.audit = audit
    }
}

/// The audit trail and the changes it records (both stores; Docs/console.md).
public protocol AuditStore: Sendable {
    /// Runs `change` and, when it changed something, appends its audit entry (with the target
    /// before and after) in the same transaction: both happen or neither does.
    func perform(_ change: AdminChange, by actor: AuditActor) async throws -> AdminOutcome
    /// Appends an entry for something outside the ledger database (a sign-in, a routing table).
    @discardableResult
    func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry
    /// Entries matching `query`, newest first.
    func auditEntries(_ query: AuditQuery) async throws -> [AuditEntry]
    func roleMappings() async throws -> [RoleMapping]
}

/// The JSON the audit trail keeps of a target before and after a change.
public enum AuditSnapshot {
    public static func key(_ key: KeyRecord) -> JSONValue {
        .object([
            "id": .string(key.id), "account": .string(key.accountID), "name": .string(key.name), "label": .string(key.label),
            "role": key.adminRole.map { .string($0.rawValue) } ?? .null, "disabled": .bool(key.disabled),
            "limit": key.limit.map { .string($0.decimalString) } ?? .null,
            "limit_reset": key.limitReset.map { .string($0) } ?? .null, "region": key.region.map { .string($0) } ?? .null,
        ])
    }

    public static func account(_ account: Account) -> JSONValue {
        .object(["id": .string(account.id), "name": .string(account.name), "region": account.region.map { .string($0) } ?? .null])
    }

    public static func balance(_ nanos: Int64) -> JSONValue { .object(["balance": .string(Money(nanos: nanos).decimalString)]) }

    public static func transfers(_ transfers: [TransferRequest], balance: Int64) -> JSONValue {
        .object([
            "balance": .string(Money(nanos: balance).decimalString),
            "transfers": .array(
                transfers.map {
                    .object([
                        "kind": .string($0.kind.rawValue), "amount": .string($0.amount.decimalString), "debit": .string($0.debitAccount),
                        "credit": .string($0.creditAccount), "memo": $0.memo.map { .string($0) } ?? .null,
                    ])
                }),
        ])
    }

    public static func role(_ role: AdminRole?) -> JSONValue { .object(["role": role.map { .string($0.rawValue) } ?? .null]) }

    /// Encodes a snapshot for a TEXT column.
    static func text(_ value: JSONValue?) -> String? { value.map(JSONWriter.string) }
    static func value(_ text: String?) -> JSONValue? { text.flatMap { try? JSONParser.parse($0) } }
}

/// A change as a store applied it, with the audit entry it still has to write.
struct AppliedChange: Sendable {
    var changed: Bool
    var found = true
    var account: Account?
    var key: KeyRecord?
    var recorded = 0
    var pendingAudit: (action: AuditAction, target: String, before: JSONValue?, after: JSONValue?)?
    var audit: AuditEntry?

    init(
        changed: Bool, found: Bool = true, account: Account? = nil, key: KeyRecord? = nil, recorded: Int = 0,
        audit pending: (AuditAction, String, JSONValue?, JSONValue?)? = nil
    ) {
        self.changed = changed
        self.found = found
        self.account = account
        self.key = key
        self.recorded = recorded
        self.pendingAudit = pending
    }

    var result: AdminOutcome {
        AdminOutcome(changed: changed, found: found, account: account, key: key, recorded: recorded, audit: audit)
    }
}
