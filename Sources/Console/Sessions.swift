import Crypto
import Foundation
import Gateway
import Ledger
import SignalboxCore

/// A signed-in operator, as the session cookie carries it. Nothing is stored per node: every node
/// that holds the same session key (derived from the cluster's admin key) accepts the cookie.
public struct ConsoleSession: Sendable, Hashable, Codable {
    /// Random; the CSRF token is derived from it.
    public var id: String
    /// `key:<key id>` or `oidc:<issuer>#<subject>`, as the audit trail names actors.
    public var actor: String
    /// What the console shows: a key's name, a user's email or name.
    public var displayName: String
    public var role: AdminRole
    /// For a session opened with an admin key, the key's hash: every request checks the key is
    /// still there, enabled, and still has this role, so revoking the key ends its sessions.
    public var keyHash: String?
    /// Seconds since 1970.
    public var issuedAt: Int64
    public var lastSeen: Int64
    /// For a single-sign-on session, the claims some role mapping used at sign-in (`group:<name>`,
    /// `email_domain:<domain>`): each request works the role out again from the mappings as they are.
    public var claims: [String]?

    /// The most powerful role the current `mappings` give this session's claims; nil when none does.
    public func roleFromClaims(_ mappings: [RoleMapping]) -> AdminRole? {
        let claims = Set(self.claims ?? [])
        return mappings.filter { claims.contains($0.target) }.map(\.role).min()
    }

    public init(id: String, actor: String, displayName: String, role: AdminRole, keyHash: String?, issuedAt: Int64, lastSeen: Int64) {
        self.id = id
        self.actor = actor
        self.displayName = displayName
        self.role = role
        self.keyHash = keyHash
        self.issuedAt = issuedAt
        self.lastSeen = lastSeen
    }
}

/// How long sessions last.
public struct SessionPolicy: Sendable, Hashable {
    /// A session unused this long is over.
    public var idle: TimeInterval = 30 * 60
    /// A session is over this long after sign-in, however much it is used.
    public var lifetime: TimeInterval = 12 * 3600
    /// A used session's cookie is written again (moving `lastSeen`) at most this often.
    public var refreshAfter: TimeInterval = 60

    public init(idle: TimeInterval = 30 * 60, lifetime: TimeInterval = 12 * 3600) {
        self.idle = idle
        self.lifetime = lifetime
    }
}

/// What a session cookie turned out to be.
public enum SessionCheck: Sendable, Equatable {
    /// Good; `refresh` when its cookie should be written again with a later `lastSeen`.
    case valid(ConsoleSession, refresh: Bool)
    case expired
    case invalid
}

/// Signs and checks the console's cookies and CSRF tokens with one HMAC-SHA256 key. Each kind of
/// value is signed under its own purpose, so a value signed for one use (an OIDC state cookie)
/// is never accepted as another (a session).
public struct ConsoleSigner: Sendable {
    let key: SymmetricKey
    public let policy: SessionPolicy

    public init(key: SymmetricKey, policy: SessionPolicy = SessionPolicy()) {
        self.key = key
        self.policy = policy
    }

    /// The session key every node derives from the operator admin key, so sessions are valid
    /// cluster-wide without being stored; rotating the admin key signs everyone out.
    public static func derivedKey(fromAdminKey adminKey: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: Data(adminKey.utf8)), salt: Data("signalbox console".utf8),
            info: Data("session signing key v1".utf8), outputByteCount: 32)
    }

    /// `payload.signature`, both base64url.
    public func seal<Value: Encodable>(_ value: Value, purpose: String) -> String {
        let payload = Base64URL.encode((try? JSONEncoder().encode(value)) ?? Data())
        return payload + "." + signature(payload, purpose: purpose)
    }

    /// The value a token holds, when its signature is good.
    public func open<Value: Decodable>(_ token: String, as type: Value.Type, purpose: String) -> Value? {
        guard token.utf8.count <= 4096 else { return nil }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, APIKeyFormat.constantTimeEquals(String(parts[1]), signature(String(parts[0]), purpose: purpose)),
            let data = Base64URL.decode(String(parts[0]))
        else { return nil }
        return try? JSONDecoder().decode(Value.self, from: data)
    }

    private func signature(_ payload: String, purpose: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data((purpose + "\u{0}" + payload).utf8), using: key)
        return Base64URL.encode(Data(mac))
    }

    public func sessionCookie(_ session: ConsoleSession) -> String { seal(session, purpose: "session") }

    /// Checks a session cookie against the clock: idle and absolute expiry.
    public func check(sessionCookie token: String, now: Date) -> SessionCheck {
        guard let session = open(token, as: ConsoleSession.self, purpose: "session") else { return .invalid }
        let seconds = Int64(now.timeIntervalSince1970)
        // A session from the future (a clock stepped back, or a forged time) is not trusted.
        guard session.issuedAt <= seconds + 300, session.lastSeen <= seconds + 300 else { return .invalid }
        guard seconds - session.issuedAt < Int64(policy.lifetime), seconds - session.lastSeen < Int64(policy.idle) else {
            return .expired
        }
        return .valid(session, refresh: seconds - session.lastSeen >= Int64(policy.refreshAfter))
    }

    /// The CSRF token of a session: forms carry it in `csrf_token`.
    public func csrfToken(sessionID: String) -> String { signature(sessionID, purpose: "csrf") }

    public func verifyCSRF(_ token: String?, sessionID: String) -> Bool {
        guard let token else { return false }
        return APIKeyFormat.constantTimeEquals(token, csrfToken(sessionID: sessionID))
    }

    /// A random identifier (128 bits, base64url).
    public static func randomID() -> String {
        Base64URL.encode(Data(SymmetricKey(size: .bits128).withUnsafeBytes { Array($0) }))
    }
}

/// base64url without padding (RFC 4648 §5), as cookies, JWTs and PKCE use it.
public enum Base64URL {
    public static func encode(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public static func decode(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}

/// Sign-in attempts per source address: a bucket of `burst` attempts that refills one every
/// `refill`; at most `capacity` addresses are remembered (the stalest forgotten first), so a
/// flood of addresses cannot grow it without bound.
public struct LoginThrottle: Sendable {
    public var burst: Double = 10
    public var refill: TimeInterval = 30
    public var capacity = 10_000
    private var buckets: [String: (tokens: Double, at: Date)] = [:]

    public init(burst: Int = 10, refill: TimeInterval = 30, capacity: Int = 10_000) {
        self.burst = Double(burst)
        self.refill = refill
        self.capacity = capacity
    }

    /// Takes one attempt for `address`; when none is left, how many seconds until one is.
    public mutating func take(address: String, now: Date) -> (allowed: Bool, retryAfter: Int) {
        var bucket = buckets[address] ?? (burst, now)
        bucket.tokens = min(burst, bucket.tokens + max(0, now.timeIntervalSince(bucket.at)) / refill)
        bucket.at = now
        let allowed = bucket.tokens >= 1
        if allowed { bucket.tokens -= 1 }
        if buckets[address] == nil, buckets.count >= capacity,
            let stalest = buckets.min(by: { $0.value.at < $1.value.at })?.key
        {
            buckets[stalest] = nil
        }
        buckets[address] = bucket
        return (allowed, allowed ? 0 : Int(((1 - bucket.tokens) * refill).rounded(.up)))
    }

    public var trackedAddresses: Int { buckets.count }
}
