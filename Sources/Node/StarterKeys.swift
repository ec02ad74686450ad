import Foundation
import Gateway
import Ledger
import SignalboxCore

/// The operator and demo accounts and keys a node starts with.
///
/// The embedded default makes both when they are missing, so a newcomer can call the router at
/// once: each key is reused from its file (or an override) when there is one, else minted and
/// written to its file (mode 0600). A cluster node (`StarterKeys.cluster`) never mints an admin
/// key — the operator provides it — and makes the demo account only when asked to.
public struct StarterKeys: Sendable {
    public static let demoAccount = "demo"
    public static let adminAccount = KeyRecord.operatorAccount

    /// Where a key comes from.
    public enum Source: Sendable, Equatable, CustomStringConvertible {
        /// This value, provided by the operator; `origin` names where it came from
        /// (`SIGNALBOX_ADMIN_KEY`, a file) for messages.
        case provided(String, origin: String)
        /// The key saved in this file, or a new one written there when the file has none.
        case savedOrMinted(file: String)

        /// Never the key itself.
        public var description: String {
            switch self {
            case .provided(let key, let origin): "\(APIKeyFormat.fingerprint(key)) from \(origin)"
            case .savedOrMinted(let file): "saved in or minted to \(file)"
            }
        }
    }

    public var admin: Source
    /// The demo account and key; nil makes none.
    public var demo: Source?
    /// Credit the demo account is granted when it is first made.
    public var demoCredits: Money

    public init(admin: Source, demo: Source?, demoCredits: Money) {
        self.admin = admin
        self.demo = demo
        self.demoCredits = demoCredits
    }

    /// A key the node made or took, and whether it was made by this start (shown once).
    public struct Key: Sendable {
        public var value: String
        public var minted: Bool
        /// What logs and banners show: the key's ledger id.
        public var fingerprint: String { APIKeyFormat.fingerprint(value) }
    }

    /// The keys, once made.
    public struct Issued: Sendable {
        public var demo: Key?
        public var admin: Key
    }

    /// Checks the provided keys before anything is opened: a bad one stops the node with an
    /// error naming where it came from, never a silent replacement.
    public func validate() throws {
        for source in [admin] + (demo.map { [$0] } ?? []) {
            if case .provided(let key, let origin) = source, let problem = APIKeyFormat.problem(withProvided: key) {
                throw StarterKeyError(message: "\(origin) \(problem)")
            }
        }
    }

    /// Makes the accounts and keys that do not exist yet; returns the keys.
    func issue(in ledger: any LedgerStore) async throws -> Issued {
        try validate()
        try await ledger.createAccount(id: Self.adminAccount, name: "Operator")
        let admin = try await key(named: "admin", source: admin, account: Self.adminAccount, isAdmin: true, ledger: ledger)
        var demoKey: Key?
        if let demo {
            let fresh = try await ledger.account(id: Self.demoAccount) == nil
            try await ledger.createAccount(id: Self.demoAccount, name: "Demo")
            if fresh && demoCredits > .zero {
                try await ledger.post([
                    TransferRequest(
                        idempotencyKey: "demo-grant", debit: Billing.SystemAccount.grants, credit: Self.demoAccount,
                        amount: demoCredits, kind: .grant, memo: "Demo credit")
                ])
            }
            demoKey = try await key(named: "demo", source: demo, account: Self.demoAccount, isAdmin: false, ledger: ledger)
        }
        return Issued(demo: demoKey, admin: admin)
    }

    private func key(named name: String, source: Source, account: String, isAdmin: Bool, ledger: any LedgerStore) async throws -> Key {
        let key: Key
        switch source {
        case .provided(let value, _):
            key = Key(value: value, minted: false)
        case .savedOrMinted(let file):
            if let saved = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                APIKeyFormat.problem(withProvided: saved) == nil
            {
                key = Key(value: saved, minted: false)
            } else {
                key = Key(value: APIKeyFormat.generate(), minted: true)
                try SecretFile.write(key.value + "\n", to: file)
            }
        }
        let hash = APIKeyFormat.hash(key.value)
        if try await ledger.key(hash: hash) == nil {
            try await ledger.insertKey(
                KeyRecord(
                    id: APIKeyFormat.fingerprint(key.value), accountID: account, hash: hash, label: APIKeyFormat.label(key.value),
                    name: name, isAdmin: isAdmin))
        }
        return key
    }
}

/// A starter key that can't be used, named by where it came from.
public struct StarterKeyError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Files only the node's user may read: keys, the ledger, the spool.
public enum SecretFile {
    /// Writes `text` to `path` through a 0600 temporary file renamed over it, so the secret is
    /// never readable by others, not even for a moment, and a crash leaves the old file whole.
    public static func write(_ text: String, to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw POSIXError(.EIO)
        }
    }

    /// Makes the directory (and its parents) with mode 0700, or tightens an existing one the
    /// node's user owns to it; returns what it did to an existing directory, for a log line.
    @discardableResult
    public static func privateDirectory(_ path: String) throws -> String? {
        var info = stat()
        if stat(path, &info) != 0 {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            return nil
        }
        guard info.st_mode & 0o077 != 0, info.st_uid == getuid() else { return nil }
        guard chmod(path, 0o700) == 0 else { return "could not tighten \(path) to 0700 (errno \(errno))" }
        return "tightened \(path) from \(String(info.st_mode & 0o777, radix: 8)) to 0700"
    }
}
