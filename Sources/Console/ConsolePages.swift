import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import Ledger
import NIOCore
import SignalboxCore

/// A signed-in request: who, with what role now, and the CSRF token its forms carry.
struct Visit: Sendable {
    var session: ConsoleSession
    var actor: AuditActor
    var role: AdminRole
    var csrf: String
    /// The session cookie written again with a later `lastSeen`, when it is due.
    var refreshed: Cookie?
}

/// A refusal that also sets cookies (a spent single-sign-on state is cleared).
struct ConsolePageError: Error {
    var error: APIError
    var cookies: [Cookie]
}

/// Text the HTML escaper sees whole: a character that starts with `<`, `>`, `&`, `"` or `'` and
/// carries combining marks would be one grapheme cluster the escaper (which compares characters)
/// does not recognise, so a zero-width space (a cluster break) is put after the special scalar.
enum SafeText {
    static let special: Set<Unicode.Scalar> = ["<", ">", "&", "\"", "'"]

    static func make(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { special.contains($0) }) else { return text }
        var result = String.UnicodeScalarView()
        for character in text {
            let scalars = character.unicodeScalars
            if scalars.count > 1, let first = scalars.first, special.contains(first) {
                result.append(first)
                result.append("\u{200B}")
                result.append(contentsOf: scalars.dropFirst())
            } else {
                result.append(contentsOf: scalars)
            }
        }
        return String(result)
    }

    /// Every string inside a template value: dictionaries, arrays, strings.
    static func deep(_ value: Any) -> Any {
        switch value {
        case let text as String: make(text)
        case let object as [String: Any]: object.mapValues(deep)
        case let strings as [String: String]: strings.mapValues(make)
        case let list as [[String: Any]]: list.map { $0.mapValues(deep) }
        case let list as [String]: list.map(make)
        case let list as [Any]: list.map(deep)
        default: value
        }
    }
}

/// A form's values and the errors to show beside its fields.
struct FormState: Sendable {
    var values: [String: String] = [:]
    var errors: [String: String] = [:]

    static func failed(_ error: APIError, values: [String: String], field fallback: String) -> FormState {
        let field = error.metadata?["param"]?.stringValue ?? fallback
        return FormState(values: values, errors: [field: error.message])
    }
}

/// The console's pages: each reads what it shows from the ledger, the node's counters and the
/// cluster, and each change goes through `Administration` (roles, validation, audit).
struct ConsolePages: Sendable {
    let console: Console
    let api: RouterAPI

    static let sessionCookie = "sb_session"
    static let loginCookie = "sb_login"
    static let oidcCookie = "sb_oidc"
    static let flashCookie = "sb_flash"
    static let pageSize = 50

    var ledger: any LedgerStore { api.dependencies.ledger }
    var administration: Administration { api.administration }
    var signer: ConsoleSigner { console.signer }
    var now: Date { Date() }

    // MARK: Sessions

    func cookie(_ name: String, _ value: String, path: String = "/console", maxAge: Int, sameSite: Cookie.SameSite = .strict) -> Cookie {
        Cookie(
            name: name, value: value, maxAge: maxAge, path: path, secure: console.settings.secureCookies, httpOnly: true,
            sameSite: sameSite)
    }

    func clearing(_ name: String, path: String = "/console") -> Cookie { cookie(name, "", path: path, maxAge: 0) }

    func sessionCookie(_ session: ConsoleSession) -> Cookie {
        cookie(Self.sessionCookie, signer.sessionCookie(session), maxAge: Int(signer.policy.lifetime))
    }

    static func sourceAddress(_ context: GatewayRequestContext) -> String? { context.channel?.remoteAddress?.ipAddress }

    /// Whom sign-in attempts are counted against: the client's address (an IPv6 address by its
    /// /64), taken from `X-Forwarded-For` only when the connection comes from a trusted balancer
    /// (`server.connection_limit_exempt`), else every operator behind it would share one count.
    func throttleKey(_ request: Request, _ context: GatewayRequestContext) -> String {
        let peer = context.channel?.remoteAddress
        let exempt = api.dependencies.configuration.connections.exemptAddresses
        if let ip = peer?.ipAddress, exempt.contains(where: { $0.contains(ip) }),
            let forwarded = request.headers[HTTPField.Name("X-Forwarded-For")!]?.split(separator: ",").last?
                .trimmingCharacters(in: .whitespaces),
            let client = try? SocketAddress(ipAddress: forwarded, port: 0)
        {
            return ConnectionLimiter.group(of: client)
        }
        return ConnectionLimiter.group(of: peer)
    }

    /// The signed-in operator, or a redirect to the sign-in page (a 403 for a form, which must not
    /// be replayed after signing in).
    func visit(_ request: Request, _ context: GatewayRequestContext) async throws -> Visit {
        func signInFirst() -> any Error {
            if request.method == .post {
                return APIError(status: 403, message: "Your session has ended; sign in again. Nothing was changed.")
            }
            let next = request.uri.path + (request.uri.query.map { "?" + $0 } ?? "")
            return ConsoleRedirect(location: "/console/login?next=" + Self.queryEncode(next), cookies: [clearing(Self.sessionCookie)])
        }
        guard let token = request.cookies[Self.sessionCookie]?.value,
            case .valid(var session, let refresh) = signer.check(sessionCookie: token, now: now)
        else { throw signInFirst() }
        // Sessions are signed with a key derived from the operator admin key: once that key is
        // revoked, no session it signed is trusted (whoever holds the old key could sign any).
        // (A session of the operator key itself is checked once, below, with the same read.)
        if let signingKey = console.settings.signingKeyHash, signingKey != session.keyHash {
            guard let key = try await ledger.key(hash: signingKey), !key.disabled else { throw signInFirst() }
        }
        var role = session.role
        if let hash = session.keyHash {
            // A key session lasts only as long as its key: revoked, deleted or expired keys end it.
            guard let key = try await ledger.key(hash: hash), !key.disabled, let current = key.adminRole,
                key.expiresAt.map({ $0 > now }) ?? true
            else { throw signInFirst() }
            role = current
        } else {
            // A single-sign-on session's role follows the mappings as they are now: a removed
            // mapping ends it, a changed one changes it.
            guard let current = session.roleFromClaims(try await ledger.roleMappings()) else { throw signInFirst() }
            role = current
        }
        session.role = role
        var refreshed: Cookie?
        if refresh {
            session.lastSeen = Int64(now.timeIntervalSince1970)
            refreshed = sessionCookie(session)
        }
        let actor = AuditActor(id: session.actor, role: role, node: api.nodeID, sourceAddress: Self.sourceAddress(context))
        return Visit(session: session, actor: actor, role: role, csrf: signer.csrfToken(sessionID: session.id), refreshed: refreshed)
    }

    /// A posted form from a signed-in operator with a valid CSRF token; otherwise 403 and nothing changes.
    func submission(_ request: Request, _ context: GatewayRequestContext) async throws -> (Visit, [String: String]) {
        let visit = try await visit(request, context)
        let form = try await Self.form(request)
        guard signer.verifyCSRF(form["csrf_token"], sessionID: visit.session.id) else {
            throw APIError(
                status: 403, message: "This form is out of date or was not sent by the console (CSRF check failed). Nothing was changed.")
        }
        return (visit, form)
    }

    static func form(_ request: Request) async throws -> [String: String] {
        let body = try await request.body.collect(upTo: 64 << 10)
        guard let form = parseForm(String(decoding: body.readableBytesView, as: UTF8.self)) else {
            throw APIError.badRequest("The form could not be read (bad percent-encoding)")
        }
        return form
    }

    /// `application/x-www-form-urlencoded`, by hand: `+` is a space, `%XX` a byte of UTF-8. The
    /// first value of a repeated name counts. Nil when an escape is malformed.
    static func parseForm(_ body: String) -> [String: String]? {
        var form: [String: String] = [:]
        for pair in body.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decodeFormComponent(parts[0]), let value = decodeFormComponent(parts.count > 1 ? parts[1] : "") else {
                return nil
            }
            if form[name] == nil { form[name] = value }
        }
        return form
    }

    static func decodeFormComponent(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    static func queryEncode(_ text: String) -> String {
        text.addingPercentEncoding(
            withAllowedCharacters: CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")) ?? ""
    }

    static func parameter(_ request: Request, _ name: String) -> String? {
        guard let value = request.uri.queryParameters[Substring(name)].map(String.init)?.trimmingCharacters(in: .whitespaces),
            !value.isEmpty
        else { return nil }
        return value
    }

    /// Only console paths: a `next` that leaves the console (or the site) is ignored.
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/console/"), !next.hasPrefix("//"), !next.contains("\\"), !next.contains("\r"), !next.contains("\n")
        else { return "/console/" }
        return next
    }

    /// After a change: back to a page, with a message shown once.
    func done(_ location: String, _ message: String, visit: Visit) -> ConsoleRedirect {
        var cookies = [cookie(Self.flashCookie, signer.seal(message, purpose: "flash"), maxAge: 60)]
        if let refreshed = visit.refreshed { cookies.append(refreshed) }
        return ConsoleRedirect(location: location, cookies: cookies)
    }

    // MARK: Rendering

    static let sections: [(id: String, label: String, href: String)] = [
        ("overview", "Overview", "/console/"), ("accounts", "Accounts", "/console/accounts"), ("keys", "Keys", "/console/keys"),
        ("ledger", "Ledger", "/console/ledger"), ("spend", "Spend", "/console/spend"), ("cluster", "Cluster", "/console/cluster"),
        ("audit", "Audit", "/console/audit"), ("access", "Access", "/console/access"),
    ]

    /// Renders `template` in the layout for a signed-in operator.
    func page(
        _ template: String, title: String, section: String, visit: Visit, request: Request, status: HTTPResponse.Status = .ok,
        form: FormState = FormState(), _ values: [String: Any?]
    ) -> Response {
        var context = values.compactMapValues { $0 }.mapValues(SafeText.deep)
        context["title"] = title
        context["csrf"] = visit.csrf
        context["canBilling"] = visit.role.allows(.billing)
        context["canOperate"] = visit.role.allows(.operations)
        context["errors"] = form.errors
        context["values"] = form.values
        context["user"] =
            [
                "name": visit.session.displayName, "role": visit.role.rawValue, "csrf": visit.csrf,
                "nav": Self.sections.map { ["href": $0.href, "label": $0.label, "current": $0.id == section] as [String: Any] },
            ] as [String: Any]
        var cookies: [Cookie] = visit.refreshed.map { [$0] } ?? []
        if let token = request.cookies[Self.flashCookie]?.value {
            if let message = signer.open(token, as: String.self, purpose: "flash") { context["flash"] = message }
            cookies.append(clearing(Self.flashCookie))
        }
        context["errors"] = SafeText.deep(form.errors)
        context["values"] = SafeText.deep(form.values)
        return html(console.library.render(context, withTemplate: template) ?? "", status: status, cookies: cookies)
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok, cookies: [Cookie] = []) -> Response {
        var response = Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }

    func errorPage(_ error: APIError, request: Request, context: GatewayRequestContext, cookies: [Cookie] = []) -> Response {
        let heading =
            switch error.statusCode {
            case 401, 403: "Not allowed"
            case 404: "Not found"
            case 429: "Too many attempts"
            case 400..<500: "That did not work"
            default: "The console could not answer"
            }
        let page: [String: Any] = [
            "title": heading, "heading": heading, "text": SafeText.make(error.message),
            "link": ["href": "/console/", "label": "Back to the console"] as [String: Any],
        ]
        var response = html(
            console.library.render(page, withTemplate: "message") ?? "", status: HTTPResponse.Status(code: error.statusCode),
            cookies: cookies)
        for (name, value) in error.headers { if let field = HTTPField.Name(name) { response.headers[field] = value } }
        return response
    }

    static func time(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [
            .withFullDate, .withTime, .withColonSeparatorInTime, .withDashSeparatorInDate, .withSpaceBetweenDateAndTime,
        ]
        return formatter.string(from: date)
    }

    // MARK: Sign-in

    func loginForm(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        if let token = request.cookies[Self.sessionCookie]?.value, case .valid = signer.check(sessionCookie: token, now: now) {
            throw ConsoleRedirect(location: Self.safeNext(Self.parameter(request, "next")))
        }
        return loginPage(next: Self.safeNext(Self.parameter(request, "next")), status: .ok, error: nil)
    }

    func loginPage(next: String, status: HTTPResponse.Status, error: String?) -> Response {
        let nonce = ConsoleSigner.randomID()
        var page: [String: Any] = [
            "title": "Sign in", "next": SafeText.make(next), "nextQuery": Self.queryEncode(next),
            "loginCSRF": signer.csrfToken(sessionID: "login:" + nonce),
            "errors": error.map { ["admin_key": $0] } ?? [:],
        ]
        if let oidc = console.settings.oidc { page["oidc"] = ["name": oidc.displayName] }
        return html(
            console.library.render(page, withTemplate: "login") ?? "", status: status,
            cookies: [cookie(Self.loginCookie, signer.seal(nonce, purpose: "login"), path: "/console/login", maxAge: 3600)])
    }

    /// One sign-in attempt from this address, or 429.
    func throttle(_ request: Request, _ context: GatewayRequestContext) throws {
        let address = throttleKey(request, context)
        let (allowed, retryAfter) = console.throttle.withLockedValue { $0.take(address: address, now: now) }
        guard allowed else {
            throw APIError(
                status: 429, message: "Too many sign-in attempts from this address; try again in \(retryAfter) s",
                headers: [("Retry-After", String(retryAfter))])
        }
    }

    func signIn(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try throttle(request, context)
        let form = try await Self.form(request)
        let next = Self.safeNext(form["next"])
        guard let nonceToken = request.cookies[Self.loginCookie]?.value,
            let nonce = signer.open(nonceToken, as: String.self, purpose: "login"),
            signer.verifyCSRF(form["csrf_token"], sessionID: "login:" + nonce)
        else {
            throw APIError(status: 403, message: "The sign-in form is out of date (CSRF check failed); open it again.")
        }
        let source = Self.sourceAddress(context)
        func refuse(_ reason: String, shown: String) async throws -> Response {
            try await ledger.appendAudit(
                AuditEntry(
                    actor: "anonymous", role: nil, action: .signInFailed, target: "console",
                    after: ["method": "admin_key", "reason": .string(reason)], node: api.nodeID, sourceAddress: source))
            return loginPage(next: next, status: .unauthorized, error: shown)
        }
        let secret = (form["admin_key"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard !secret.isEmpty else { return try await refuse("no key given", shown: "Enter an admin key") }
        let key: KeyRecord
        do {
            key = try await api.authenticator.authenticate(authorization: "Bearer " + secret)
        } catch let error as APIError where error.statusCode == 401 {
            return try await refuse("unknown, revoked or expired key", shown: "That key is not a valid admin key")
        }
        guard let role = key.adminRole, key.expiresAt.map({ $0 > now }) ?? true else {
            return try await refuse("not an admin key (\(key.id))", shown: "That key is not a valid admin key")
        }
        let seconds = Int64(now.timeIntervalSince1970)
        let session = ConsoleSession(
            id: ConsoleSigner.randomID(), actor: AuditActor.key(key), displayName: String(key.name.prefix(100)), role: role,
            keyHash: key.hash, issuedAt: seconds, lastSeen: seconds)
        try await ledger.appendAudit(
            AuditEntry(
                actor: session.actor, role: role, action: .signIn, target: "console", after: ["method": "admin_key"], node: api.nodeID,
                sourceAddress: source))
        throw ConsoleRedirect(location: next, cookies: [sessionCookie(session), clearing(Self.loginCookie, path: "/console/login")])
    }

    struct PendingSignIn: Codable {
        var state: String
        var nonce: String
        var verifier: String
        var next: String
        var redirect: String
        var at: Int64
    }

    func redirectURL(_ request: Request) -> String {
        if let configured = console.settings.oidc?.redirectURL { return configured }
        let host = request.head.authority ?? "127.0.0.1"
        return (console.settings.secureCookies ? "https://" : "http://") + host + "/console/oidc/callback"
    }

    func startSingleSignOn(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        guard let oidc = console.oidc else { throw APIError.notFound("Single sign-on is not configured on this node") }
        try throttle(request, context)
        let pending = PendingSignIn(
            state: ConsoleSigner.randomID(), nonce: ConsoleSigner.randomID(), verifier: ConsoleSigner.randomID() + ConsoleSigner.randomID(),
            next: Self.safeNext(Self.parameter(request, "next")), redirect: redirectURL(request), at: Int64(now.timeIntervalSince1970))
        let location: String
        do {
            location = try await oidc.authorizationURL(
                state: pending.state, nonce: pending.nonce, verifier: pending.verifier, redirectURL: pending.redirect)
        } catch {
            console.logger.error("single sign-on: the provider's discovery failed", metadata: ["error": "\(error)"])
            throw APIError(status: 502, message: "The identity provider did not answer; try again, or sign in with an admin key")
        }
        // Lax: the provider sends the browser back with a cross-site navigation, which a Strict cookie would miss.
        throw ConsoleRedirect(
            location: location,
            cookies: [cookie(Self.oidcCookie, signer.seal(pending, purpose: "oidc"), path: "/console/oidc", maxAge: 600, sameSite: .lax)])
    }

    func finishSingleSignOn(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        guard let oidc = console.oidc else { throw APIError.notFound("Single sign-on is not configured on this node") }
        try throttle(request, context)
        let source = Self.sourceAddress(context)
        func refuse(_ reason: String, actor: String = "anonymous") async throws -> Never {
            let reason = reason.count > 200 ? String(reason.prefix(200)) + "…" : reason
            try await ledger.appendAudit(
                AuditEntry(
                    actor: actor, role: nil, action: .signInFailed, target: "console",
                    after: ["method": "oidc", "reason": .string(reason)], node: api.nodeID, sourceAddress: source))
            // The pending sign-in is spent: its state cannot be tried again.
            throw ConsolePageError(
                error: APIError(status: 403, message: "Single sign-on failed: \(reason)."),
                cookies: [clearing(Self.oidcCookie, path: "/console/oidc")])
        }
        guard let token = request.cookies[Self.oidcCookie]?.value,
            let pending = signer.open(token, as: PendingSignIn.self, purpose: "oidc"),
            Int64(now.timeIntervalSince1970) - pending.at < 600
        else {
            throw APIError(status: 400, message: "This sign-in was not started here or took too long; start it again.")
        }
        guard let state = Self.parameter(request, "state"), APIKeyFormat.constantTimeEquals(state, pending.state) else {
            try await refuse("the state does not match this browser's sign-in")
        }
        if let error = Self.parameter(request, "error") { try await refuse("the provider said \(error)") }
        guard let code = Self.parameter(request, "code") else { try await refuse("the provider sent no code") }
        let identity: OIDCIdentity
        do {
            identity = try await oidc.signIn(code: code, verifier: pending.verifier, nonce: pending.nonce, redirectURL: pending.redirect)
        } catch let failure as OIDCFailure {
            try await refuse(failure.reason)
        } catch {
            console.logger.error("single sign-on failed", metadata: ["error": "\(error)"])
            try await refuse("the identity provider could not be reached")
        }
        let mappings = try await ledger.roleMappings()
        guard let role = identity.role(from: mappings) else {
            try await refuse("no role mapping matches this user's groups or email domain", actor: identity.actor)
        }
        let seconds = Int64(now.timeIntervalSince1970)
        var session = ConsoleSession(
            id: ConsoleSigner.randomID(), actor: identity.actor,
            displayName: String((identity.email ?? identity.name ?? identity.subject).prefix(100)), role: role, keyHash: nil,
            issuedAt: seconds, lastSeen: seconds)
        // Only the claims some mapping uses are kept, so the cookie stays small however many groups the user has.
        session.claims = identity.mappedClaims(from: mappings)
        try await ledger.appendAudit(
            AuditEntry(
                actor: identity.actor, role: role, action: .signIn, target: "console",
                after: [
                    "method": "oidc", "email": identity.email.map { .string($0) } ?? .null,
                    "groups": .array(identity.groups.map { .string($0) }),
                ], node: api.nodeID, sourceAddress: source))
        return html(
            console.library.render(["to": pending.next], withTemplate: "redirect") ?? "",
            cookies: [sessionCookie(session), clearing(Self.oidcCookie, path: "/console/oidc")])
    }

    func signOut(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, _) = try await submission(request, context)
        do {
            try await ledger.appendAudit(AuditEntry(visit.actor, action: .signOut, target: "console"))
        } catch {
            console.logger.error("sign-out not recorded in the audit trail", metadata: ["error": "\(error)", "actor": "\(visit.actor.id)"])
        }
        throw ConsoleRedirect(location: "/console/login", cookies: [clearing(Self.sessionCookie)])
    }
}
