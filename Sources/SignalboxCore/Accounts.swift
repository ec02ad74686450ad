import Foundation

/// An account's money: `balance` is credit minus posted charges; `available` also subtracts
/// open leases.
public struct AccountBalance: Sendable, Hashable {
    public var balance: Money
    public var available: Money
    public init(balance: Money, available: Money) {
        self.balance = balance
        self.available = available
    }
}

public struct Account: Sendable, Hashable {
    public var id: String
    public var name: String
    public var isSystem: Bool
    public var createdAt: Date
    /// The region the account's requests are pinned to (data residency), nil for none.
    public var region: String?

    public init(id: String, name: String, isSystem: Bool, createdAt: Date, region: String? = nil) {
        self.id = id
        self.name = name
        self.isSystem = isSystem
        self.createdAt = createdAt
        self.region = region
    }
}

/// An API key as stored: only the SHA-256 of the secret is kept.
public struct KeyRecord: Sendable, Hashable {
    public var id: String
    public var accountID: String
    /// Hex SHA-256 of the full key.
    public var hash: String
    /// Masked form for display, e.g. `sk-sb-v1-3f2…9ac1`.
    public var label: String
    public var name: String
    /// What an operator key may do on the admin surfaces; nil for a customer (inference) key.
    public var adminRole: AdminRole?
    /// Operator keys reach the admin surfaces (what they may change there depends on `adminRole`).
    public var isAdmin: Bool { adminRole != nil }
    public var disabled: Bool
    /// Spending limit in USD, nil for none.
    public var limit: Money?
    /// `daily`, `weekly`, `monthly` or nil.
    public var limitReset: String?
    public var expiresAt: Date?
    public var createdAt: Date
    /// The region this key's requests are pinned to, nil for none.
    public var region: String?
    /// The key's account's region (read with the key).
    public var accountRegion: String?

    /// Where requests with this key must be served: the key's region, else its account's.
    public var pinnedRegion: String? { region ?? accountRegion }

    public init(
        id: String, accountID: String, hash: String, label: String, name: String, isAdmin: Bool = false,
        adminRole: AdminRole? = nil, disabled: Bool = false, limit: Money? = nil, limitReset: String? = nil, expiresAt: Date? = nil,
        createdAt: Date = Date(), region: String? = nil, accountRegion: String? = nil
    ) {
        self.region = region
        self.accountRegion = accountRegion
        self.id = id
        self.accountID = accountID
        self.hash = hash
        self.label = label
        self.name = name
        self.adminRole = adminRole ?? (isAdmin ? .admin : nil)
        self.disabled = disabled
        self.limit = limit
        self.limitReset = limitReset
        self.expiresAt = expiresAt
        self.createdAt = createdAt
    }
}

/// Spend through one key since several points in time (all-time, day, week, month).
public struct KeyUsage: Sendable, Hashable {
    public var total: Money
    public var daily: Money
    public var weekly: Money
    public var monthly: Money
    public init(total: Money = .zero, daily: Money = .zero, weekly: Money = .zero, monthly: Money = .zero) {
        self.total = total
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
    }

    /// Spend in a key limit's window: `daily`, `weekly`, `monthly`, or all time for no reset.
    public func spent(resetting reset: String?) -> Money {
        switch reset {
        case "daily": daily
        case "weekly": weekly
        case "monthly": monthly
        default: total
        }
    }
}

/// The starts of the current UTC day, ISO week (Monday) and month, for key usage and limits.
public struct UsageWindows: Sendable {
    public var day: Date
    public var week: Date
    public var month: Date

    public init(now: Date) {
        var calendar = Calendar(identifier: .iso8601)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        day = calendar.startOfDay(for: now)
        week = calendar.dateInterval(of: .weekOfYear, for: now)?.start ?? day
        month = calendar.dateInterval(of: .month, for: now)?.start ?? day
    }
}

/// What an operator may do on the admin API and the console (Docs/console.md). The operator admin
/// key is `admin`; other admin keys and single-sign-on users get the role they were given.
extension KeyRecord {
    /// The account operator (admin) keys belong to.
    public static let operatorAccount = "operator"
}

public enum AdminRole: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// Everything: billing, plus routing tables, the cluster, admin keys and role mappings.
    case admin
    /// Accounts, keys, credits and the ledger; no routing or cluster changes.
    case billing
    /// Reads everything, changes nothing.
    case auditor

    /// The role a stored key has: none for a customer key; `admin` for an operator key from
    /// before roles were stored (NULL); `auditor`, the least powerful, for a value this binary
    /// does not know (a newer node's role, a hand edit), so an unknown role never grants more.
    public static func stored(isAdmin: Bool, _ value: String?) -> AdminRole? {
        guard isAdmin else { return nil }
        guard let value else { return .admin }
        return AdminRole(rawValue: value) ?? .auditor
    }

    public func allows(_ permission: AdminPermission) -> Bool {
        switch (self, permission) {
        case (.admin, _), (.billing, .read), (.billing, .billing), (.auditor, .read): true
        default: false
        }
    }

    /// Ordered by power, most first: `admin < billing < auditor`.
    public static func < (lhs: AdminRole, rhs: AdminRole) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// What an admin action needs, checked the same way on the admin API, the console and the CLI.
public enum AdminPermission: String, Sendable, Hashable, CaseIterable {
    /// Read accounts, keys, the ledger, spend, the cluster and the audit trail.
    case read
    /// Create and pin accounts, create, change and revoke customer keys, purchase, grant and reverse credit.
    case billing
    /// Change routing tables, create admin keys and change role mappings.
    case operations
}
