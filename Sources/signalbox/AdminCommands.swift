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
    @Option(help: "postgres://user:password@host:port/db (default: SIGNALBOX_DATABASE_URL).") var databaseURL: String?
    @Option(help: "Directory of the embedded SQLite ledger, when no database URL is given.") var dataDir: String = ".signalbox"
    @Flag(help: "Print JSON.") var json = false

    /// Opens the ledger, runs `body`, closes it.
    func withLedger<T: Sendable>(_ body: (any LedgerStore) async throws -> T) async throws -> T {
        if let url = databaseURL ?? ProcessInfo.processInfo.environment["SIGNALBOX_DATABASE_URL"] {
            let client = PostgresClient(configuration: try PostgresLedgerStore.configuration(url: url))
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await client.run() }
                defer { group.cancelAll() }
                let store = PostgresLedgerStore(client: client)
                try await store.migrate()
                return try await body(store)
            }
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

    func emit(_ value: JSONValue, text: String) {
        print(json ? JSONWriter.string(value) : text)
    }
}

func parseAmount(_ text: String, option: String) throws -> Money {
    guard let amount = Money(decimal: text), amount > .zero else {
        throw ValidationError("\(option) must be a positive decimal amount in USD, e.g. 25 or 0.5")
    }
    return amount
}

struct AccountsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "accounts", abstract: "Manage customer accounts.",
                                                    subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account (prints its id).")
        @Option(help: "Display name.") var name: String
        @Option(help: "Account id (default: a new acct-… id).") var id: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let id = self.id ?? "acct-" + UUID().uuidString.lowercased().prefix(12)
            let account = try await ledger.withLedger { try await $0.createAccount(id: id, name: name) }
            ledger.emit(["id": .string(account.id), "name": .string(account.name)], text: account.id)
        }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "keys", abstract: "Manage API keys.",
                                                    subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a key; the key itself is printed once and never stored.")
        @Option(help: "Account the key spends from.") var account: String
        @Option(help: "Key name.") var name: String = "default"
        @Option(help: "Spending limit in USD.") var limit: String?
        @Option(help: "When the limit resets: daily, weekly or monthly.") var limitReset: String?
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let limit = try self.limit.map { try parseAmount($0, option: "--limit") }
            if let reset = limitReset, !["daily", "weekly", "monthly"].contains(reset) {
                throw ValidationError("--limit-reset must be daily, weekly or monthly")
            }
            let secret = APIKeyFormat.generate()
            let hash = APIKeyFormat.hash(secret)
            let record = KeyRecord(id: "key-" + String(hash.prefix(16)), accountID: account, hash: hash,
                                   label: APIKeyFormat.label(secret), name: name, limit: limit, limitReset: limitReset)
            try await ledger.withLedger { store in
                guard try await store.account(id: account) != nil else { throw ValidationError("No account \(account)") }
                try await store.insertKey(record)
            }
            ledger.emit(["key": .string(secret), "id": .string(record.id), "label": .string(record.label)], text: secret)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List an account's keys (labels only).")
        @Option(help: "Account.") var account: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let keys = try await ledger.withLedger { try await $0.keys(account: account) }
            ledger.emit(.array(keys.map { key in
                ["id": .string(key.id), "label": .string(key.label), "name": .string(key.name), "disabled": .bool(key.disabled),
                 "limit": key.limit.map { .decimal($0.decimalString) } ?? nil, "limit_reset": key.limitReset.map { .string($0) } ?? nil]
            }), text: keys.map { "\($0.id)  \($0.label)  \($0.name)\($0.disabled ? "  (revoked)" : "")" }.joined(separator: "\n"))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key by id.")
        @Argument(help: "Key id (from `keys list`).") var id: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            guard try await ledger.withLedger({ try await $0.setKeyDisabled(id: id, disabled: true) }) else {
                throw ValidationError("No key \(id)")
            }
            ledger.emit(["id": .string(id), "revoked": true], text: "Revoked \(id).")
        }
    }
}

struct CreditsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "credits", abstract: "Add credit to accounts.",
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
            let fee = Billing.purchaseFee(for: credit)
            let reference = self.reference ?? UUID().uuidString
            try await ledger.withLedger { store in
                try await store.post([
                    TransferRequest(idempotencyKey: "purchase:\(reference)", debit: Billing.SystemAccount.purchases,
                                    credit: account, amount: credit, kind: .purchase, memo: "credit purchase \(reference)"),
                    TransferRequest(idempotencyKey: "fee:\(reference)", debit: Billing.SystemAccount.purchases,
                                    credit: Billing.SystemAccount.fees, amount: fee, kind: .fee, memo: "platform fee \(reference)"),
                ])
            }
            ledger.emit(["account": .string(account), "credit": .decimal(credit.decimalString), "fee": .decimal(fee.decimalString),
                         "charged": .decimal((credit + fee).decimalString)],
                        text: "Credited \(credit) to \(account); fee \(fee); the buyer pays \(credit + fee).")
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
            let reference = self.reference ?? UUID().uuidString
            try await ledger.withLedger { store in
                try await store.post([TransferRequest(idempotencyKey: "grant:\(reference)", debit: Billing.SystemAccount.grants,
                                                      credit: account, amount: credit, kind: .grant, memo: "grant \(reference)")])
            }
            ledger.emit(["account": .string(account), "credit": .decimal(credit.decimalString)], text: "Granted \(credit) to \(account).")
        }
    }
}

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ledger", abstract: "Query and check the ledger.",
                                                    subcommands: [Balance.self, Entries.self, Verify.self])

    struct Balance: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "An account's balance and available credit.")
        @Option(help: "Account (customer or system, e.g. platform:fees or provider:openai).") var account: String
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let balance = try await ledger.withLedger { try await $0.balance(account: account) }
            ledger.emit(["balance": .string(balance.balance.decimalString), "available": .string(balance.available.decimalString)],
                        text: "balance \(balance.balance)  available \(balance.available)")
        }
    }

    struct Entries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "An account's latest ledger entries.")
        @Option(help: "Account.") var account: String
        @Option(help: "How many, newest first.") var limit: Int = 50
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let entries = try await ledger.withLedger { try await $0.entries(account: account, limit: limit) }
            let formatter = ISO8601DateFormatter()
            ledger.emit(.array(entries.map { entry in
                ["id": .int(entry.id), "kind": .string(entry.kind.rawValue), "debit": .string(entry.debitAccount),
                 "credit": .string(entry.creditAccount), "amount": .string(entry.amount.decimalString),
                 "generation_id": entry.generationID.map { .string($0) } ?? nil, "key_id": entry.keyID.map { .string($0) } ?? nil,
                 "memo": entry.memo.map { .string($0) } ?? nil, "created_at": .string(formatter.string(from: entry.createdAt))]
            }), text: entries.map {
                "\(formatter.string(from: $0.createdAt))  \($0.kind.rawValue)  \($0.debitAccount) → \($0.creditAccount)  \($0.amount)"
            }.joined(separator: "\n"))
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recompute every balance from the entries and check them.")
        @OptionGroup var ledger: LedgerOptions

        func run() async throws {
            let result = try await ledger.withLedger { try await $0.verify() }
            ledger.emit(["consistent": .bool(result.isConsistent), "transfers": .int(Int64(result.transferCount)),
                         "mismatched_accounts": .array(result.mismatchedAccounts.map { .string($0) }),
                         "sum_of_balances": .string(result.totalOfBalances.decimalString)],
                        text: result.isConsistent ? "Ledger consistent: \(result.transferCount) transfers, balances sum to zero."
                            : "LEDGER INCONSISTENT: \(result.mismatchedAccounts)")
            if !result.isConsistent { throw ExitCode(1) }
        }
    }
}
