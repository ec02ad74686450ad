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
        var role = session.role
        if let hash = session.keyHash {
            // A key session lasts only as long as its key: revoked, deleted or demoted keys end it.
            guard let key = try await ledger.key(hash: hash), !key.disabled, let current = key.adminRole else { throw signInFirst() }
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
        var components = URLComponents()
        components.percentEncodedQuery = String(buffer: body).replacingOccurrences(of: "+", with: "%20")
        var form: [String: String] = [:]
        for item in components.queryItems ?? [] where form[item.name] == nil { form[item.name] = item.value ?? "" }
        return form
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
        var context = values.compactMapValues { $0 }
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
        return html(console.library.render(context, withTemplate: template) ?? "", status: status, cookies: cookies)
    }

    func html(_ text: String, status: HTTPResponse.Status = .ok, cookies: [Cookie] = []) -> Response {
        var response = Response(
            status: status, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }

    func errorPage(_ error: APIError, request: Request, context: GatewayRequestContext) -> Response {
        let heading =
            switch error.statusCode {
            case 401, 403: "Not allowed"
            case 404: "Not found"
            case 429: "Too many attempts"
            case 400..<500: "That did not work"
            default: "The console could not answer"
            }
        let page: [String: Any] = [
            "title": heading, "heading": heading, "text": error.message,
            "link": ["href": "/console/", "label": "Back to the console"] as [String: Any],
        ]
        var response = html(
            console.library.render(page, withTemplate: "message") ?? "", status: HTTPResponse.Status(code: error.statusCode))
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
            "title": "Sign in", "next": next, "loginCSRF": signer.csrfToken(sessionID: "login:" + nonce),
            "errors": error.map { ["admin_key": $0] } ?? [:],
        ]
        if let oidc = console.settings.oidc { page["oidc"] = ["name": oidc.displayName] }
        return html(
            console.library.render(page, withTemplate: "login") ?? "", status: status,
            cookies: [cookie(Self.loginCookie, signer.seal(nonce, purpose: "login"), path: "/console/login", maxAge: 3600)])
    }

    /// One sign-in attempt from this address, or 429.
    func throttle(_ context: GatewayRequestContext) throws {
        let address = Self.sourceAddress(context) ?? "unknown"
        let (allowed, retryAfter) = console.throttle.withLockedValue { $0.take(address: address, now: now) }
        guard allowed else {
            throw APIError(
                status: 429, message: "Too many sign-in attempts from this address; try again in \(retryAfter) s",
                headers: [("Retry-After", String(retryAfter))])
        }
    }

    func signIn(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try throttle(context)
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
        guard let role = key.adminRole else {
            return try await refuse("not an admin key (\(key.id))", shown: "That key is not a valid admin key")
        }
        let seconds = Int64(now.timeIntervalSince1970)
        let session = ConsoleSession(
            id: ConsoleSigner.randomID(), actor: AuditActor.key(key), displayName: key.name, role: role, keyHash: key.hash,
            issuedAt: seconds, lastSeen: seconds)
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
        try throttle(context)
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
        let source = Self.sourceAddress(context)
        func refuse(_ reason: String, actor: String = "anonymous") async throws -> Never {
            try await ledger.appendAudit(
                AuditEntry(
                    actor: actor, role: nil, action: .signInFailed, target: "console",
                    after: ["method": "oidc", "reason": .string(reason)], node: api.nodeID, sourceAddress: source))
            throw APIError(status: 403, message: "Single sign-on failed: \(reason).")
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
        guard let role = identity.role(from: try await ledger.roleMappings()) else {
            try await refuse("no role mapping matches this user's groups or email domain", actor: identity.actor)
        }
        let seconds = Int64(now.timeIntervalSince1970)
        let session = ConsoleSession(
            id: ConsoleSigner.randomID(), actor: identity.actor, displayName: identity.email ?? identity.name ?? identity.subject,
            role: role,
            keyHash: nil, issuedAt: seconds, lastSeen: seconds)
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
        try await ledger.appendAudit(AuditEntry(visit.actor, action: .signOut, target: "console"))
        throw ConsoleRedirect(location: "/console/login", cookies: [clearing(Self.sessionCookie)])
    }
}
