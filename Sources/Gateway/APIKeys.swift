import Crypto
import Foundation
import Ledger
import SignalboxCore
import NIOConcurrencyHelpers

/// API key format, hashing and display.
///
/// Keys are `sk-sb-v1-` followed by 64 hex digits of randomness. Only the SHA-256 of a key is
/// stored; the plaintext is shown once, when the key is made.
public enum APIKeyFormat {
    public static let prefix = "sk-sb-v1-"

    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return prefix + hex(bytes)
    }

    public static func hash(_ key: String) -> String {
        hex(SHA256.hash(data: Array(key.utf8)))
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `sk-sb-v1-3f2…9ac1`: enough to recognise a key, not to use it.
    public static func label(_ key: String) -> String {
        let head = key.prefix(min(key.count, prefix.count + 3))
        return "\(head)...\(key.suffix(4))"
    }

    /// The key's id in the ledger (`key-` and 16 hex digits of its hash): what logs and banners
    /// show instead of a key, and what `keys list` shows.
    public static func fingerprint(_ key: String) -> String {
        "key-" + String(hash(key).prefix(16))
    }

    /// Why a key an operator provides (an environment variable, a file) can't be used, or nil
    /// when it can: it must start with `sk-` and have at least 20 printable ASCII characters.
    public static func problem(withProvided key: String) -> String? {
        guard key.hasPrefix("sk-") else { return "must start with sk-" }
        guard key.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            return "must be printable ASCII characters only (no spaces or control characters)"
        }
        guard key.utf8.count >= 20 else { return "must be at least 20 characters long (it has \(key.utf8.count))" }
        return nil
    }

    /// Compares two equal-length strings in time that does not depend on where they differ.
    public static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }
}

/// The keys a node has looked up recently: found ones (a few per real key, kept while the ledger
/// is out of reach so their owners keep working) and not-found ones (any string an attacker
/// sends), each bounded so neither can grow the node's memory without end.
struct KeyCache {
    struct Entry {
        var record: KeyRecord
        var fetched: Date
    }

    var found: [String: Entry] = [:]
    var missing: [String: Date] = [:]
    let maxFound: Int
    let maxMissing: Int
    /// How long a not-found answer stands: short, so a key made a moment ago works at once.
    let missingLifetime: TimeInterval

    init(maxFound: Int = 100_000, maxMissing: Int = 10_000, missingLifetime: TimeInterval = 1) {
        self.maxFound = maxFound
        self.maxMissing = maxMissing
        self.missingLifetime = missingLifetime
    }

    /// The cached answer for `hash`: `.some(record)` found, `.some(nil)` known missing, nil unknown,
    /// with when it was fetched.
    func lookup(_ hash: String, now: Date) -> (record: KeyRecord?, fetched: Date)? {
        if let entry = found[hash] { return (entry.record, entry.fetched) }
        if let fetched = missing[hash], now.timeIntervalSince(fetched) < missingLifetime { return (nil, fetched) }
        return nil
    }

    mutating func store(_ hash: String, record: KeyRecord?, now: Date) {
        if let record {
            missing[hash] = nil
            if found[hash] == nil && found.count >= maxFound {
                // Full: the tenth fetched longest ago goes (keys in use are fetched again every second).
                for (stale, _) in found.sorted(by: { $0.value.fetched < $1.value.fetched }).prefix(max(1, maxFound / 10)) {
                    found[stale] = nil
                }
            }
            found[hash] = Entry(record: record, fetched: now)
        } else {
            found[hash] = nil
            if missing.count >= maxMissing {
                missing = missing.filter { now.timeIntervalSince($0.value) < missingLifetime }
                // Still full of fresh misses (a flood of distinct bogus keys): start over.
                if missing.count >= maxMissing { missing = [:] }
            }
            missing[hash] = now
        }
    }

    mutating func removeAll() {
        found = [:]
        missing = [:]
    }
}

/// Resolves bearer keys to key records, with a short-lived in-memory cache so the hot path does
/// not query the ledger for every request.
public final class KeyAuthenticator: Sendable {
    let ledger: any KeyStore
    let ttl: TimeInterval
    /// Told about a failed lookup, so the node stops waiting on the ledger until it is back.
    let committer: SettlementCommitter?
    var reachability: LedgerReachability { committer?.reachability ?? Self.alwaysReachable }
    static let alwaysReachable = LedgerReachability()
    private let cache: NIOLockedValueBox<KeyCache>

    public init(ledger: any KeyStore, ttl: TimeInterval = 1, committer: SettlementCommitter? = nil) {
        self.ledger = ledger
        self.ttl = ttl
        self.committer = committer
        cache = NIOLockedValueBox(KeyCache(missingLifetime: ttl))
    }

    /// The key record for an `Authorization` header value, or a 401.
    public func authenticate(authorization: String?) async throws -> KeyRecord {
        guard let authorization, authorization.lowercased().hasPrefix("bearer ") else {
            throw APIError.unauthorized("No auth credentials found")
        }
        let key = authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard key.hasPrefix("sk-") else { throw APIError.unauthorized("Invalid API key format") }
        let hash = APIKeyFormat.hash(key)
        let now = Date()
        let cached = cache.withLockedValue { $0.lookup(hash, now: now) }
        let record: KeyRecord?
        if let cached, now.timeIntervalSince(cached.fetched) < ttl {
            record = cached.record
        } else {
            record = try await lookUp(hash: hash, now: now, cached: cached)
        }
        guard let record, APIKeyFormat.constantTimeEquals(record.hash, hash) else {
            throw APIError.unauthorized("User not found.")
        }
        if record.disabled { throw APIError.unauthorized("This API key is disabled") }
        if let expiry = record.expiresAt, expiry <= now { throw APIError.unauthorized("This API key has expired") }
        return record
    }

    /// Reads a key from the ledger. While the ledger is down, a key seen recently still works (its
    /// charges are spooled); an unknown one cannot be checked.
    private func lookUp(hash: String, now: Date, cached: (record: KeyRecord?, fetched: Date)?) async throws -> KeyRecord? {
        if reachability.isReachable {
            do {
                let ledger = self.ledger
                let record = try await withLedgerDeadline(.seconds(2), "a key lookup") { try await ledger.key(hash: hash) }
                cache.withLockedValue { $0.store(hash, record: record, now: now) }
                return record
            } catch {
                await committer?.noticeOutage()
                guard let cached else { throw APIError.ledgerUnavailable }
                return cached.record
            }
        }
        guard let cached else { throw APIError.ledgerUnavailable }
        return cached.record
    }

    /// Forgets cached keys, so a change made through the ledger shows at once on this node.
    public func invalidate() { cache.withLockedValue { $0.removeAll() } }
}
