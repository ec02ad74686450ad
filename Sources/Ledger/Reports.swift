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
    /// Only entries older than this id: the cursor of the next page (the last id of this one).
    public var before: Int64?
    /// Only entries newer than this id (a watcher's cursor).
    public var after: Int64?

    public init(
        account: String? = nil, keyID: String? = nil, model: String? = nil, provider: String? = nil,
        kind: TransferKind? = nil, generationID: String? = nil, transferID: Int64? = nil, since: Date? = nil,
        until: Date? = nil, limit: Int = 100
    ) {
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
        if let before { clauses.append("t.id < \(bind(.integer(before)))") }
        if let after { clauses.append("t.id > \(bind(.integer(after)))") }
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
    /// UTC hour (`YYYY-MM-DDTHH:00`).
    case hour
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

extension ReportStore {
    /// Pages by the id cursor, each page its own read: right for a store with one writer at a
    /// time (SQLite), where ids become visible in order. PostgreSQL reads all pages in one snapshot.
    public func forEachEntry(_ query: EntryQuery, pageSize: Int, _ body: ([LedgerEntry]) async throws -> Void) async throws {
        try await Self.pages(of: query, pageSize: pageSize, read: { try await entries($0) }, body)
    }

    /// Every entry `query` matches in pages of 1,000.
    public func forEachEntry(_ query: EntryQuery, _ body: ([LedgerEntry]) async throws -> Void) async throws {
        try await forEachEntry(query, pageSize: 1000, body)
    }

    /// The cursor walk: pages of `pageSize` newest first, `query.limit` in all.
    nonisolated(nonsending) static func pages(
        of query: EntryQuery, pageSize: Int, read: (EntryQuery) async throws -> [LedgerEntry],
        _ body: ([LedgerEntry]) async throws -> Void
    ) async throws {
        var page = query
        var left = query.limit
        while left > 0 {
            page.limit = min(pageSize, left)
            let entries = try await read(page)
            if !entries.isEmpty { try await body(entries) }
            guard entries.count == page.limit, let last = entries.last else { return }
            left -= entries.count
            page.before = last.transfer.id
        }
    }
}

/// Customer accounts for a list: matching `search` (in the id or the name, any case), ordered by
/// id, after the id cursor `after`.
public struct AccountQuery: Sendable, Hashable {
    public var search: String?
    public var after: String?
    public var limit: Int

    public init(search: String? = nil, after: String? = nil, limit: Int = 50) {
        self.search = search
        self.after = after
        self.limit = limit
    }

    /// `search` as a `LIKE` pattern with its wildcards escaped (`\` is the escape character).
    public var likePattern: String? {
        guard let search, !search.isEmpty else { return nil }
        var escaped = ""
        for character in search.lowercased() {
            if character == "%" || character == "_" || character == "\\" { escaped.append("\\") }
            escaped.append(character)
        }
        return "%\(escaped)%"
    }
}

/// An account with its money, as the console's list shows it.
public struct AccountSummary: Sendable, Hashable {
    public var account: Account
    public var balance: Money
    /// Reserved by open leases and holds: `balance - held` is available.
    public var held: Money
    /// Open leases on the account (nodes' reservations for requests in flight).
    public var openLeases: Int

    public init(account: Account, balance: Money, held: Money, openLeases: Int) {
        self.account = account
        self.balance = balance
        self.held = held
        self.openLeases = openLeases
    }

    public var available: Money { balance - held }
}
