import AsyncHTTPClient
import Crypto
import Foundation
import Gateway
import JWTKit
import Ledger
import NIOCore
import NIOHTTP1
import SignalboxCore

/// Single sign-on against an OpenID Connect provider (Keycloak, Okta, Entra ID, Google…):
/// Docs/console.md shows each one's settings.
public struct OIDCSettings: Sendable, Hashable {
    /// The issuer URL; its `/.well-known/openid-configuration` is read at the first sign-in.
    public var issuer: String
    public var clientID: String
    public var clientSecret: String
    /// Where the provider sends the browser back; nil derives it from the request
    /// (`<scheme>://<host>/console/oidc/callback`). Register exactly this URL with the provider.
    public var redirectURL: String?
    public var scopes: [String]
    /// The ID-token claim that lists the user's groups.
    public var groupsClaim: String
    /// What the sign-in button says.
    public var displayName: String

    public init(
        issuer: String, clientID: String, clientSecret: String, redirectURL: String? = nil,
        scopes: [String] = ["openid", "email", "profile"], groupsClaim: String = "groups", displayName: String = "single sign-on"
    ) {
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.redirectURL = redirectURL
        self.scopes = scopes
        self.groupsClaim = groupsClaim
        self.displayName = displayName
    }

    /// Why these settings cannot work, if they cannot: the issuer must be https (plain http
    /// only on a loopback address, for tests), and the scopes must include `openid`.
    public var problem: String? {
        guard let url = URL(string: issuer), let scheme = url.scheme, let host = url.host else {
            return "console.oidc.issuer is not a URL"
        }
        if scheme != "https" && !(scheme == "http" && ["127.0.0.1", "localhost", "::1"].contains(host)) {
            return "console.oidc.issuer must be an https URL (http only on a loopback address)"
        }
        if clientID.isEmpty { return "console.oidc.client_id is empty" }
        if clientSecret.isEmpty { return "the OIDC client secret is empty (SIGNALBOX_OIDC_CLIENT_SECRET)" }
        if !scopes.contains("openid") { return "console.oidc.scopes must include openid" }
        return nil
    }
}

/// Who a verified ID token says the user is.
public struct OIDCIdentity: Sendable, Hashable {
    public var issuer: String
    public var subject: String
    public var email: String?
    public var emailVerified: Bool
    public var name: String?
    public var groups: [String]

    public init(issuer: String, subject: String, email: String?, emailVerified: Bool, name: String?, groups: [String]) {
        self.issuer = issuer
        self.subject = subject
        self.email = email
        self.emailVerified = emailVerified
        self.name = name
        self.groups = groups
    }

    /// The audit trail's name for the user.
    public var actor: String { "oidc:\(issuer)#\(subject)" }

    /// The most powerful role any mapping gives this user: by one of their groups, or by the
    /// domain of a verified email. Nil when none matches (the user is refused).
    public func role(from mappings: [RoleMapping]) -> AdminRole? { matching(mappings).map(\.role).min() }

    /// The mappings this user's claims match.
    func matching(_ mappings: [RoleMapping]) -> [RoleMapping] {
        mappings.filter { mapping in
            switch mapping.claim {
            case .group: groups.contains(mapping.value)
            case .emailDomain: verifiedDomain == mapping.value.lowercased()
            }
        }
    }

    /// The claims (as mappings name them) that some mapping uses, for the session to keep.
    public func mappedClaims(from mappings: [RoleMapping]) -> [String] { matching(mappings).map(\.target) }

    /// The domain of a verified email with exactly one `@`.
    var verifiedDomain: String? {
        guard emailVerified, let email else { return nil }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return parts[1].lowercased()
    }
}

/// Why a sign-in through the provider failed; the message is shown to the user and audited.
public struct OIDCFailure: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The standard claims of an ID token this console checks, verified by jwt-kit's signature check.
struct IDTokenClaims: JWTPayload {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    var exp: ExpirationClaim
    var iat: IssuedAtClaim?
    var azp: String?
    var nonce: String?
    var email: String?
    var email_verified: FlexibleBool?
    var name: String?
    var preferred_username: String?

    func verify(using algorithm: some JWTAlgorithm) async throws {
        // A minute of leeway for clocks that differ a little; issuer, audience and nonce are checked by the caller.
        try exp.verifyNotExpired(currentDate: Date().addingTimeInterval(-60))
    }
}

/// `email_verified` as a boolean or, as some providers send it, a string.
struct FlexibleBool: Codable, Sendable {
    var value: Bool
    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            value = flag
        } else {
            value = (try? container.decode(String.self)) == "true"
        }
    }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// The provider's discovery document: the fields the code flow needs.
struct OIDCDiscovery: Sendable, Decodable {
    var issuer: String
    var authorization_endpoint: String
    var token_endpoint: String
    var jwks_uri: String
    var token_endpoint_auth_methods_supported: [String]?
    var code_challenge_methods_supported: [String]?
}

/// The authorization code flow with PKCE, against one provider. The discovery document and the
/// keys are fetched once and kept; the keys are fetched again when a token names a key id they
/// lack (at most once a minute), so the provider can rotate its keys.
public actor OIDCClient {
    public let settings: OIDCSettings
    let http: HTTPClient
    private var discovery: (document: OIDCDiscovery, fetchedAt: Date)?
    private var keys: (collection: JWTKeyCollection, kids: Set<String>, fetchedAt: Date)?
    static let maxDocumentBytes = 1 << 20

    public init(settings: OIDCSettings, http: HTTPClient) {
        self.settings = settings
        self.http = http
    }

    func document() async throws -> OIDCDiscovery {
        if let discovery, Date().timeIntervalSince(discovery.fetchedAt) < 3600 { return discovery.document }
        let url =
            settings.issuer.hasSuffix("/")
            ? settings.issuer + ".well-known/openid-configuration"
            : settings.issuer + "/.well-known/openid-configuration"
        let fetched = try JSONDecoder().decode(OIDCDiscovery.self, from: try await get(url))
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        guard fetched.issuer == settings.issuer else {
            throw OIDCFailure("the provider's discovery document names issuer \(fetched.issuer), not \(settings.issuer)")
        }
        discovery = (fetched, Date())
        return fetched
    }

    /// Where to send the browser to sign in.
    public func authorizationURL(state: String, nonce: String, verifier: String, redirectURL: String) async throws -> String {
        let document = try await document()
        var components = URLComponents(string: document.authorization_endpoint)
        let existing = components?.queryItems ?? []
        components?.queryItems =
            existing + [
                URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: settings.clientID),
                URLQueryItem(name: "redirect_uri", value: redirectURL),
                URLQueryItem(name: "scope", value: settings.scopes.joined(separator: " ")), URLQueryItem(name: "state", value: state),
                URLQueryItem(name: "nonce", value: nonce), URLQueryItem(name: "code_challenge", value: Self.challenge(verifier)),
                URLQueryItem(name: "code_challenge_method", value: "S256"),
            ]
        guard let url = components?.url?.absoluteString else { throw OIDCFailure("the provider's authorization endpoint is not a URL") }
        return url
    }

    /// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
    public static func challenge(_ verifier: String) -> String {
        Base64URL.encode(Data(SHA256.hash(data: Data(verifier.utf8))))
    }

    /// Trades the code for tokens and returns who the verified ID token says signed in.
    public func signIn(code: String, verifier: String, nonce: String, redirectURL: String) async throws -> OIDCIdentity {
        let document = try await document()
        var form = [
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirectURL), ("code_verifier", verifier),
        ]
        var request = HTTPClientRequest(url: document.token_endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        request.headers.add(name: "Accept", value: "application/json")
        let methods = document.token_endpoint_auth_methods_supported ?? ["client_secret_basic"]
        if methods.contains("client_secret_basic") {
            let credentials = "\(Self.formEncode(settings.clientID)):\(Self.formEncode(settings.clientSecret))"
            request.headers.add(name: "Authorization", value: "Basic " + Data(credentials.utf8).base64EncodedString())
        } else {
            form += [("client_id", settings.clientID), ("client_secret", settings.clientSecret)]
        }
        request.body = .bytes(ByteBuffer(string: form.map { "\($0)=\(Self.formEncode($1))" }.joined(separator: "&")))
        let response = try await http.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: Self.maxDocumentBytes)
        guard response.status == .ok else {
            let detail = (try? JSONParser.parse(Data(buffer: body)))?["error"]?.stringValue ?? "HTTP \(response.status.code)"
            throw OIDCFailure("the provider refused the sign-in code (\(detail))")
        }
        guard let idToken = (try? JSONParser.parse(Data(buffer: body)))?["id_token"]?.stringValue else {
            throw OIDCFailure("the provider's token answer has no id_token")
        }
        return try await verify(idToken: idToken, nonce: nonce)
    }

    /// Checks an ID token: signature (by the provider's published keys), issuer, audience,
    /// expiry and nonce.
    public func verify(idToken: String, nonce: String) async throws -> OIDCIdentity {
        let keys = try await keyCollection(for: idToken)
        let claims: IDTokenClaims
        do {
            claims = try await keys.verify(idToken, as: IDTokenClaims.self)
        } catch let error as JWTError {
            throw OIDCFailure("the ID token was refused: \(Self.explain(error))")
        } catch {
            throw OIDCFailure("the ID token was refused: \(error)")
        }
        guard claims.iss.value == settings.issuer else { throw OIDCFailure("the ID token was issued by \(claims.iss.value)") }
        guard claims.aud.value.contains(settings.clientID) else { throw OIDCFailure("the ID token is for another client (audience)") }
        // OIDC Core §3.1.3.7: with several audiences, the authorized party must be this client.
        if claims.aud.value.count > 1, claims.azp != settings.clientID {
            throw OIDCFailure("the ID token is for another client (authorized party)")
        }
        guard let tokenNonce = claims.nonce, APIKeyFormat.constantTimeEquals(tokenNonce, nonce) else {
            throw OIDCFailure("the ID token's nonce does not match this sign-in")
        }
        return OIDCIdentity(
            issuer: claims.iss.value, subject: claims.sub.value, email: claims.email,
            emailVerified: claims.email_verified?.value ?? false, name: claims.name ?? claims.preferred_username,
            groups: Self.groups(in: idToken, claim: settings.groupsClaim))
    }

    static func explain(_ error: JWTError) -> String {
        let text = "\(error)"
        if text.contains("expired") { return "it has expired" }
        if text.contains("signature") || text.contains("Signature") { return "its signature does not verify" }
        return text.count > 200 ? String(text.prefix(200)) : text
    }

    /// The groups claim (an array of strings, or one string) of a token whose signature was verified.
    static func groups(in token: String, claim: String) -> [String] {
        let parts = token.split(separator: ".")
        guard parts.count == 3, let data = Base64URL.decode(String(parts[1])), let payload = try? JSONParser.parse(data) else { return [] }
        if let values = payload[claim]?.arrayValue { return values.compactMap(\.stringValue) }
        return payload[claim]?.stringValue.map { [$0] } ?? []
    }

    /// The keys to check `token` with: the cached ones, fetched again when the token names a
    /// key id they lack and the last fetch is over a minute old.
    func keyCollection(for token: String) async throws -> JWTKeyCollection {
        let kid = Self.keyID(of: token)
        if let keys, kid.map(keys.kids.contains) ?? true || Date().timeIntervalSince(keys.fetchedAt) < 60 {
            return keys.collection
        }
        let document = try await document()
        let data = try await get(document.jwks_uri)
        let jwks = try JSONDecoder().decode(JWKS.self, from: data)
        let collection = JWTKeyCollection()
        for jwk in jwks.keys {
            // A key this library cannot use (an encryption key, an unknown type) is skipped, not fatal.
            _ = try? await collection.add(jwk: jwk)
        }
        let kids = Set(jwks.keys.compactMap { $0.keyIdentifier?.string })
        keys = (collection, kids, Date())
        return collection
    }

    static func keyID(of token: String) -> String? {
        guard let header = token.split(separator: ".").first, let data = Base64URL.decode(String(header)) else { return nil }
        return (try? JSONParser.parse(data))?["kid"]?.stringValue
    }

    func get(_ url: String) async throws -> Data {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "application/json")
        let response = try await http.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: Self.maxDocumentBytes)
        guard response.status == .ok else { throw OIDCFailure("the provider answered HTTP \(response.status.code) for \(url)") }
        return Data(buffer: body)
    }

    /// `application/x-www-form-urlencoded` escaping (RFC 6749 Appendix B).
    static func formEncode(_ text: String) -> String {
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}
