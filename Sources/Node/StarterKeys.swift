import Foundation
import Gateway
import Ledger
import SignalboxCore

/// The demo and operator accounts and keys the embedded default starts with, so a newcomer can
/// call the router at once. Each key is reused from its file (or an `sk-` override) when one is
/// there, and written back to it.
public struct StarterKeys: Sendable {
    public static let demoAccount = "demo"
    public static let adminAccount = "operator"

    /// Where the demo and admin keys are kept.
    public var demoKeyFile: String
    public var adminKeyFile: String
    /// Keys to use instead of the saved or a new one (`SIGNALBOX_DEMO_KEY`, `SIGNALBOX_ADMIN_KEY`).
    public var demoKeyOverride: String?
    public var adminKeyOverride: String?
    /// Credit the demo account is granted when it is first made.
    public var demoCredits: Money

    public init(directory: String, demoCredits: Money, demoKeyOverride: String? = nil, adminKeyOverride: String? = nil) {
        demoKeyFile = directory + "/demo-key"
        adminKeyFile = directory + "/admin-key"
        self.demoCredits = demoCredits
        self.demoKeyOverride = demoKeyOverride
        self.adminKeyOverride = adminKeyOverride
    }

    /// The keys, once made.
    public struct Issued: Sendable {
        public var demo: String
        public var admin: String
    }

    /// Makes the accounts and keys that do not exist yet; returns the keys.
    func issue(in ledger: any LedgerStore) async throws -> Issued {
        let fresh = try await ledger.account(id: Self.demoAccount) == nil
        try await ledger.createAccount(id: Self.demoAccount, name: "Demo")
        try await ledger.createAccount(id: Self.adminAccount, name: "Operator")
        if fresh && demoCredits > .zero {
            try await ledger.post([
                TransferRequest(
                    idempotencyKey: "demo-grant", debit: Billing.SystemAccount.grants, credit: Self.demoAccount,
                    amount: demoCredits, kind: .grant, memo: "Demo credit")
            ])
        }
        let demo = try await key(
            named: "demo", file: demoKeyFile, override: demoKeyOverride, account: Self.demoAccount, isAdmin: false, ledger: ledger)
        let admin = try await key(
            named: "admin", file: adminKeyFile, override: adminKeyOverride, account: Self.adminAccount, isAdmin: true, ledger: ledger)
        return Issued(demo: demo, admin: admin)
    }

    private func key(
        named name: String, file: String, override: String?, account: String, isAdmin: Bool, ledger: any LedgerStore
    ) async throws -> String {
        let key: String
        if let override, override.hasPrefix("sk-") {
            key = override
        } else if let saved = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            saved.hasPrefix("sk-")
        {
            key = saved
        } else {
            key = APIKeyFormat.generate()
        }
        try key.write(toFile: file, atomically: true, encoding: .utf8)
        let hash = APIKeyFormat.hash(key)
        if try await ledger.key(hash: hash) == nil {
            try await ledger.insertKey(
                KeyRecord(
                    id: "key-" + String(hash.prefix(16)), accountID: account, hash: hash, label: APIKeyFormat.label(key),
                    name: name, isAdmin: isAdmin))
        }
        return key
    }
}
