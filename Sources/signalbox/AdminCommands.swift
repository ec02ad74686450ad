import ArgumentParser
import Foundation
import Gateway
import Ledger
import Logging
import PostgresNIO
import SignalboxCore

/// Where an admin command finds the ledger: PostgreSQL (`--database-url` or
/// `SIGNALBOX_DATABASE_URL`), else the embedded SQLite ledger in `--data-dir`.
struct LedgerOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions
    @Option(help: "Directory of the embedded SQLite ledger, when no database URL is given.") var dataDir: String = ".signalbox"
    @Flag(help: "Print JSON.") var json = false

    /// Opens the ledger, runs `body`, closes it.
    func withLedger<T: Sendable>(_ body: (any LedgerStore) async throws -> T) async throws -> T {
        if let settings = try database.settings(statementTimeout: nil) {
            return try await PostgresLedgerStore.withStore(settings: settings) { try await body($0) }
        }
        guard FileManager.default.fileExists(atPath: dataDir + "/ledger.sqlite") else {
            throw ValidationError("No ledger: give --database-url, or --data-dir of a node that has run `signalbox serve`")
        }
        let store = try await SQLiteLedgerStore.open(path: dataDir + "/ledger.sqlite")
        do {
            let result = try await body(store)
            try await store.close()
            return result
        } catch {
            try? await store.close()
            throw error
        }
    }

    /// Opens the ledger and runs `body` with the administration every audited change goes
    /// through; the command line acts with the `admin` role, as `cli:<user>@<host>`.
    func withAdministration<T: Sendable>(_ body: (Administration, AuditActor) async throws -> T) async throws -> T {
        do {
            return try await withLedger { store in try await body(Administration(ledger: store, cluster: nil, catalog: nil), Self.actor) }
        } catch let error as APIError {
            throw CommandFailure(message: error.message)
        }
    }

    static var actor: AuditActor {
        let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown"
        return AuditActor(id: "cli:\(user)@\(ProcessInfo.processInfo.hostName)", role: .admin, node: "cli")
    }

    func emit(_ value: JSONValue, text: String) {
        print(json ? JSONWriter.string(value) : text)
    }
}

/// An admin command that was refused: its message, and exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

func parseAmount(_ text: String, option: String) throws -> Money {
    guard let parsed = ExactDecimal(text), parsed.significand > 0 else {
        throw ValidationError("\(option) must be a positive decimal amount in USD, e.g. 25 or 0.5")
    }
    guard let amount = Money(decimal: text), amount <= .maximumAmount else {
        guard parsed.fractionDigits <= 9 else { throw ValidationError("\(option) has more than nine decimal places") }
        throw ValidationError("\(option) must be at most \(Money.maximumAmount.decimalString) USD")
    }
    return amount
}

struct AccountsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "accounts", abstract: "Manage customer accounts.",
        subcommands: [Create.self, Pin.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account (prints its id).")
        @Option(help: "Display name.") var name: String
        @Option(help: "Account id (default: a new acct-… id).") var id: String?
        @Option(help: "Pin the account's requests to this region (data residency).") var region: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let account = try await ledger.withAdministration { admin, actor in
                try await admin.createAccount(name: name, id: id, region: region, by: actor)
            }
            ledger.emit(
                ["id": .string(account.id), "name": .string(account.name), "region": account.region.map { .string($0) } ?? nil],
                text: account.id)
        }
    }

    struct Pin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pin an account's requests to a region (served only there, by that region's endpoints), or unpin it.")
        @Option(help: "Account.") var account: String
        @Option(help: "Region, or 'none' to unpin.") var region: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let region = self.region == "none" ? nil : self.region
            _ = try await ledger.withAdministration { admin, actor in try await admin.pinAccount(account, region: region, by: actor) }
            ledger.emit(
                ["account": .string(account), "region": region.map { .string($0) } ?? nil],
                text: region.map { "Pinned \(account) to \($0)." } ?? "Unpinned \(account).")
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys.",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; the key itself is printed once and never stored.")
        @Option(help: "Account the key spends from (not used with --admin).") var account: String?
        @Option(help: "Key name.") var name: String = "default"
        @Option(help: "Spending limit in USD.") var limit: String?
        @Option(help: "When the limit resets: daily, weekly or monthly.") var limitReset: String?
        @Option(help: "Pin this key's requests to a region (overrides the account's).") var region: String?
        @Flag(help: "An operator key for the admin API and the console, instead of a customer key.") var admin = false
        @Option(help: "The operator key's role: admin, billing or auditor (with --admin).") var role: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let limit = try self.limit.map { try parseAmount($0, option: "--limit") }
            var adminRole: AdminRole?
            if admin {
                guard let parsed = AdminRole(rawValue: role ?? "admin") else {
                    throw ValidationError("--role must be admin, billing or auditor")
                }
                adminRole = parsed
            } else if role != nil {
                throw ValidationError("--role gives an operator key its role: add --admin")
            }
            guard admin || account != nil else { throw ValidationError("Give --account (the account the key spends from), or --admin") }
            let draft = Administration.KeyDraft(
                account: account ?? KeyRecord.operatorAccount, name: name, limit: limit, limitReset: limitReset, region: region,
                adminRole: adminRole)
            let (record, secret) = try await ledger.withAdministration { admin, actor in try await admin.createKey(draft, by: actor) }
            ledger.emit(
                [
                    "key": .string(secret), "id": .string(record.id), "label": .string(record.label),
                    "role": record.adminRole.map { .string($0.rawValue) } ?? nil,
                ], text: secret)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an account's keys (labels only).")
        @Option(help: "Account.") var account: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let keys = try await ledger.withLedger { try await $0.keys(account: account) }
            ledger.emit(
                .array(
                    keys.map { key in
                        [
                            "id": .string(key.id), "label": .string(key.label), "name": .string(key.name), "disabled": .bool(key.disabled),
                            "limit": key.limit.map { .decimal($0.decimalString) } ?? nil,
                            "limit_reset": key.limitReset.map { .string($0) } ?? nil,
                            "role": key.adminRole.map { .string($0.rawValue) } ?? nil,
                        ]
                    }), text: keys.map { "\($0.id)  \($0.label)  \($0.name)\($0.disabled ? "  (revoked)" : "")" }.joined(separator: "\n"))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id.")
        @Argument(help: "Key id (from `keys list`).") var id: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            try await ledger.withAdministration { admin, actor in
                guard let key = try await admin.ledger.key(id: id) else { throw CommandFailure(message: "No key \(id)") }
                _ = try await admin.updateKey(hash: key.hash, KeyUpdate(disabled: true), by: actor)
            }
            ledger.emit(["id": .string(id), "revoked": true], text: "Revoked \(id).")
        }
    }
}

struct CreditsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "credits", abstract: "Add credit to accounts.",
        subcommands: [Purchase.self, Grant.self])

    struct Purchase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record a purchase of credit: the account gets the amount, the platform a 5.5% fee ($0.80 minimum).")
        @Option(help: "Account.") var account: String
        @Option(help: "Credit bought, USD.") var amount: String
        @Option(help: "Payment reference; repeating it records nothing twice.") var reference: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let credit = try parseAmount(amount, option: "--amount")
            let result = try await ledger.withAdministration { admin, actor in
                try await admin.addCredit(account: account, amount: credit, kind: .purchase, reference: self.reference, by: actor)
            }
            let (fee, reference) = (result.fee, result.reference)
            ledger.emit(
                [
                    "account": .string(account), "credit": .decimal(credit.decimalString), "fee": .decimal(fee.decimalString),
                    "charged": .decimal((credit + fee).decimalString), "reference": .string(reference),
                    "already_recorded": .bool(result.alreadyRecorded),
                ],
                text: result.alreadyRecorded
                    ? "Already recorded: purchase \(reference) credited \(credit) to \(account) before; nothing new was recorded."
                    : "Credited \(credit) to \(account); fee \(fee); the buyer pays \(credit + fee).")
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give promotional credit (no fee).")
        @Option(help: "Account.") var account: String
        @Option(help: "Credit granted, USD.") var amount: String
        @Option(help: "Grant reference; repeating it records nothing twice.") var reference: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let credit = try parseAmount(amount, option: "--amount")
            let result = try await ledger.withAdministration { admin, actor in
                try await admin.addCredit(account: account, amount: credit, kind: .grant, reference: self.reference, by: actor)
            }
            let reference = result.reference
            ledger.emit(
                [
                    "account": .string(account), "credit": .decimal(credit.decimalString), "reference": .string(reference),
                    "already_recorded": .bool(result.alreadyRecorded),
                ],
                text: result.alreadyRecorded
                    ? "Already recorded: grant \(reference) gave \(credit) to \(account) before; nothing new was recorded."
                    : "Granted \(credit) to \(account).")
        }
    }
}

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Query and check the ledger.",
        subcommands: [Balance.self, Entries.self, Spend.self, Generation.self, Reverse.self, Verify.self])

    struct Balance: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "An account's balance and available credit.")
        @Option(help: "Account (customer or system, e.g. platform:fees or provider:openai).") var account: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let balance = try await ledger.withLedger { try await $0.balance(account: account) }
            ledger.emit(
                ["balance": .string(balance.balance.decimalString), "available": .string(balance.available.decimalString)],
                text: "balance \(balance.balance)  available \(balance.available)")
        }
    }

    struct Entries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ledger entries matching the filters, newest first (text, JSON or CSV).")
        @OptionGroup var filters: EntryFilters
        @Option(help: "How many, newest first.") var limit: Int = 100
        @Flag(help: "Every matching entry (read in pages of 1,000; output streams as it is read).") var all = false
        @Option(help: "Output: text, json or csv (--json is the same as --format json).") var format: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            var query = try filters.query()
            guard limit >= 1 else { throw ValidationError("--limit must be at least 1 (or give --all)") }
            query.limit = all ? Int.max : limit
            let format = self.format ?? (ledger.json ? "json" : "text")
            guard ["json", "csv", "text"].contains(format) else { throw ValidationError("--format must be text, json or csv") }
            var printed = 0
            let output = FileHandle.standardOutput
            func write(_ text: String) { output.write(Data(text.utf8)) }
            if format == "json" { write("[") }
            if format == "csv" { write(EntryFormat.csvHeader) }
            try await ledger.withLedger { store in
                try await store.forEachEntry(query) { page in
                    switch format {
                    case "json":
                        write((printed == 0 ? "" : ",") + page.map { JSONWriter.string(EntryFormat.json($0)) }.joined(separator: ","))
                    case "csv": write(EntryFormat.csvRows(page))
                    default: write(page.map(EntryFormat.text).joined(separator: "\n") + "\n")
                    }
                    printed += page.count
                }
            }
            if format == "json" { write("]\n") }
            if !all && printed == limit {
                // Said on stderr, so the output stays one document.
                FileHandle.standardError.write(Data("(the newest \(limit) entries; --all for every one, or --limit N)\n".utf8))
            }
        }
    }

    struct Spend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Charges summed per day, model, provider, key or account, over the entries the filters match.")
        @Option(help: "Group by: day, model, provider, key or account.") var by: String = "day"
        @OptionGroup var filters: EntryFilters
        @Option(help: "Output: text, json or csv.") var format: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            guard let grouping = SpendGrouping(rawValue: by) else {
                throw ValidationError("--by must be one of \(SpendGrouping.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let query = try filters.query()
            let rows = try await ledger.withLedger { try await $0.spend(query, by: grouping) }
            switch format ?? (ledger.json ? "json" : "text") {
            case "json":
                print(
                    JSONWriter.string(
                        .array(
                            rows.map {
                                [
                                    .init(grouping.rawValue): .string($0.group), "amount": .string($0.amount.decimalString),
                                    "requests": .int(Int64($0.requests)),
                                ]
                            })))
            case "csv":
                print("\(grouping.rawValue),amount,requests")
                for row in rows { print("\(EntryFormat.csvField(row.group)),\(row.amount.decimalString),\(row.requests)") }
            case "text":
                for row in rows { print("\(row.group.isEmpty ? "(none)" : row.group)  \(row.amount)  \(row.requests) requests") }
            default: throw ValidationError("--format must be text, json or csv")
            }
        }
    }

    struct Generation: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One request's generation record and its ledger entries.")
        @Argument(help: "Generation id (gen-…, the X-Generation-Id header).") var id: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let (record, entries) = try await ledger.withLedger { store in
                (try await store.generation(id: id), try await store.entries(EntryQuery(generationID: id)))
            }
            guard let record else { throw ValidationError("No generation \(id)") }
            let value: JSONValue = [
                "id": .string(record.id), "account": .string(record.accountID), "key_id": record.keyID.map { .string($0) } ?? nil,
                "model": .string(record.model), "provider": record.providerName.map { .string($0) } ?? nil,
                "cost": .string(record.cost.decimalString), "tokens_prompt": .int(Int64(record.usage.promptTokens)),
                "tokens_completion": .int(Int64(record.usage.completionTokens)), "streamed": .bool(record.streamed),
                "cancelled": .bool(record.cancelled), "finish_reason": record.finishReason.map { .string($0) } ?? nil,
                "created_at": .string(ISO8601DateFormatter().string(from: record.createdAt)),
                "attempts": .array(record.attempts.map { ["provider": .string($0.provider), "status": .string($0.status)] }),
                "entries": .array(entries.map(EntryFormat.json)),
            ]
            ledger.emit(
                value,
                text: """
                    \(record.id)  \(record.model) via \(record.providerName ?? "-")  cost \(record.cost)  account \(record.accountID)
                    tokens: \(record.usage.promptTokens) prompt, \(record.usage.completionTokens) completion
                    """ + entries.map { "\n  " + EntryFormat.text($0) }.joined())
        }
    }

    struct Reverse: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Correct or refund an entry by posting its reversal (the entry itself is never edited).")
        @Option(help: "Id of the entry to reverse (from `ledger entries`).") var entry: Int64
        @Option(help: "Why, kept in the reversal's memo.") var reason: String = "reversal"
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let (reversal, _) = try await ledger.withAdministration { admin, actor in
                try await admin.reverse(entry: entry, reason: reason, by: actor)
            }
            ledger.emit(
                [
                    "reversed": .int(entry), "debit": .string(reversal.debitAccount), "credit": .string(reversal.creditAccount),
                    "amount": .string(reversal.amount.decimalString),
                ],
                text: "Reversed entry \(entry): \(reversal.amount) from \(reversal.debitAccount) back to \(reversal.creditAccount).")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every ledger invariant in one snapshot; exits 1 when any is broken.",
            discussion: """
                Balances match their entries and sum to zero; no customer is below zero or holds more than \
                its balance; every charge equals its generation's cost; provider payables equal the costs \
                the generations recorded; no expired hold is still pending. See Docs/ledger.md.
                """)
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let result = try await ledger.withLedger { try await $0.verify() }
            let lines = result.invariants.map { invariant in
                (invariant.holds ? "  ok      " : "  BROKEN  ") + invariant.name
                    + (invariant.holds ? "" : " (\(invariant.violations): \(invariant.examples.joined(separator: ", ")))")
            }
            ledger.emit(
                result.json,
                text: (result.isConsistent
                    ? "Ledger consistent: \(result.transferCount) transfers, \(result.generationCount) generations, \(result.accountCount) accounts."
                    : "LEDGER INCONSISTENT") + "\n" + lines.joined(separator: "\n"))
            if !result.isConsistent { throw ExitCode(1) }
        }
    }
}

/// Filters shared by `ledger entries` and `ledger spend`.
struct EntryFilters: ParsableArguments {
    @Option(help: "Account on either side (customer or system, e.g. provider:openai).") var account: String?
    @Option(help: "API key id (from `keys list`).") var key: String?
    @Option(help: "Model id, e.g. openai/gpt-4o-mini.") var model: String?
    @Option(help: "Provider slug, e.g. openai.") var provider: String?
    @Option(help: "Entry kind: purchase, fee, grant, charge, insurance, refund, reversal or adjustment.") var kind: String?
    @Option(help: "From this time on: 2026-11-25 or 2026-11-25T14:00:00Z (UTC).") var since: String?
    @Option(help: "Before this time (same forms as --since).") var until: String?

    func query() throws -> EntryQuery {
        var kind: TransferKind?
        if let text = self.kind {
            guard let parsed = TransferKind(rawValue: text) else { throw ValidationError("Unknown --kind \(text)") }
            kind = parsed
        }
        return EntryQuery(
            account: account, keyID: key, model: model, provider: provider, kind: kind,
            since: try since.map { try Self.date($0, option: "--since") },
            until: try until.map { try Self.date($0, option: "--until") })
    }

    static func date(_ text: String, option: String) throws -> Date {
        if let date = EntryQuery.parseTime(text) { return date }
        throw ValidationError("\(option) must be a date (2026-11-25) or an ISO 8601 time (2026-11-25T14:00:00Z)")
    }
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Read the audit trail of admin changes and sign-ins.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List audit entries, newest first.")
        @Option(help: "Only entries at or after this date (2026-11-25) or ISO 8601 time.") var since: String?
        @Option(help: "Only entries before this date or time.") var until: String?
        @Option(help: "Only this actor (key:key-…, oidc:<issuer>#<subject>, cli:<user>@<host>).") var actor: String?
        @Option(help: "Only this action (account_created, key_revoked, credit_purchased, sign_in, …).") var action: String?
        @Option(help: "Only entries about this target (an account, key id or region).") var target: String?
        @Option(help: "At most this many entries.") var limit: Int = 100
        @Option(help: "Output: text, json or csv.") var format: String = "text"
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            var action: AuditAction?
            if let name = self.action {
                guard let parsed = AuditAction(rawValue: name) else {
                    throw ValidationError("--action must be one of \(AuditAction.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                action = parsed
            }
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be 1 to 100000") }
            let format = ledger.json ? "json" : self.format
            guard ["text", "json", "csv"].contains(format) else { throw ValidationError("--format must be text, json or csv") }
            let query = AuditQuery(
                since: try since.map { try EntryFilters.date($0, option: "--since") },
                until: try until.map { try EntryFilters.date($0, option: "--until") }, actor: actor, action: action, target: target,
                limit: limit)
            let entries = try await ledger.withLedger { try await $0.auditEntries(query) }
            switch format {
            case "json": print(JSONWriter.string(.array(entries.map(AuditFormat.json))))
            case "csv": print(AuditFormat.csv(entries), terminator: "")
            default: print(entries.isEmpty ? "No audit entries match." : entries.map(AuditFormat.text).joined(separator: "\n"))
            }
        }
    }
}
