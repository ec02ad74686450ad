import AsyncHTTPClient
import Crypto
import Foundation
import Gateway
import HTTPTypes
import Hummingbird
import Ledger
import Logging
import Mustache
import NIOConcurrencyHelpers
import NIOCore
import SignalboxCore

/// How the console runs on a node.
public struct ConsoleSettings: Sendable {
    /// Signs session cookies and CSRF tokens; the same on every node of a cluster
    /// (`ConsoleSigner.derivedKey(fromAdminKey:)`), so a session is valid on all of them.
    public var sessionKey: SymmetricKey
    public var policy: SessionPolicy
    /// Marks cookies `Secure`: on when the node serves TLS, or behind a balancer that does.
    public var secureCookies: Bool
    public var oidc: OIDCSettings?
    /// Sign-in attempts per source address (a burst, then one per `loginRefill`).
    public var loginBurst: Int
    public var loginRefill: TimeInterval
    /// The hash of the operator admin key the session key was derived from: while that key is
    /// revoked, no session is accepted. Nil when the session key was given on its own.
    public var signingKeyHash: String?

    public init(
        sessionKey: SymmetricKey, policy: SessionPolicy = SessionPolicy(), secureCookies: Bool = false, oidc: OIDCSettings? = nil,
        loginBurst: Int = 10, loginRefill: TimeInterval = 30, signingKeyHash: String? = nil
    ) {
        self.signingKeyHash = signingKeyHash
        self.sessionKey = sessionKey
        self.policy = policy
        self.secureCookies = secureCookies
        self.oidc = oidc
        self.loginBurst = loginBurst
        self.loginRefill = loginRefill
    }
}

/// The operator console at `/console/`: server-rendered pages over the same `Administration`
/// and ledger as the admin API, so roles and the audit trail hold alike (Docs/console.md).
public struct Console: RouterExtension {
    let settings: ConsoleSettings
    let signer: ConsoleSigner
    let oidc: OIDCClient?
    let library: MustacheLibrary
    let throttle: NIOLockedValueBox<LoginThrottle>
    let logger: Logger

    public init(settings: ConsoleSettings, http: HTTPClient, logger: Logger) throws {
        self.settings = settings
        signer = ConsoleSigner(key: settings.sessionKey, policy: settings.policy)
        oidc = settings.oidc.map { OIDCClient(settings: $0, http: http) }
        library = try ConsoleTemplates.library()
        throttle = NIOLockedValueBox(LoginThrottle(burst: settings.loginBurst, refill: settings.loginRefill))
        self.logger = logger
    }

    public func register(on router: Router<GatewayRequestContext>, api: RouterAPI) {
        let pages = ConsolePages(console: self, api: api)
        let console = router.group("/console").add(middleware: ConsoleResponseMiddleware(pages: pages))
        console.get("/assets/console.css") { _, _ in Self.asset(ConsoleAssets.css, type: "text/css; charset=utf-8") }
        console.get("/assets/console.js") { _, _ in Self.asset(ConsoleAssets.javascript, type: "text/javascript; charset=utf-8") }
        console.get("/assets/favicon.svg") { _, _ in Self.asset(ConsoleAssets.favicon, type: "image/svg+xml") }
        console.get("/login") { request, context in try await pages.loginForm(request, context) }
        console.post("/login") { request, context in try await pages.signIn(request, context) }
        console.get("/login/oidc") { request, context in try await pages.startSingleSignOn(request, context) }
        console.get("/oidc/callback") { request, context in try await pages.finishSingleSignOn(request, context) }
        console.post("/logout") { request, context in try await pages.signOut(request, context) }
        console.get("/") { request, context in try await pages.overview(request, context) }
        console.get("/accounts") { request, context in try await pages.accounts(request, context) }
        console.post("/accounts") { request, context in try await pages.createAccount(request, context) }
        console.get("/accounts/:account") { request, context in try await pages.account(request, context) }
        console.post("/accounts/:account/purchase") { request, context in try await pages.purchase(request, context) }
        console.post("/accounts/:account/grant") { request, context in try await pages.grant(request, context) }
        console.post("/accounts/:account/region") { request, context in try await pages.pinAccount(request, context) }
        console.get("/keys") { request, context in try await pages.keys(request, context) }
        console.post("/keys") { request, context in try await pages.createKey(request, context) }
        console.post("/keys/:hash") { request, context in try await pages.updateKey(request, context) }
        console.post("/keys/:hash/revoke") { request, context in try await pages.revokeKey(request, context) }
        console.get("/ledger") { request, context in try await pages.ledger(request, context) }
        console.get("/ledger/export.csv") { request, context in try await pages.ledgerExport(request, context) }
        console.post("/ledger/:entry/reverse") { request, context in try await pages.reverse(request, context) }
        console.get("/generations/:generation") { request, context in try await pages.generation(request, context) }
        console.get("/spend") { request, context in try await pages.spend(request, context) }
        console.get("/cluster") { request, context in try await pages.cluster(request, context) }
        console.post("/routing/:region") { request, context in try await pages.setRouting(request, context) }
        console.get("/audit") { request, context in try await pages.audit(request, context) }
        console.get("/audit/export.csv") { request, context in try await pages.auditExport(request, context) }
        console.get("/access") { request, context in try await pages.access(request, context) }
        console.post("/access/roles") { request, context in try await pages.setRoleMapping(request, context) }
        // Anything else under /console is an HTML 404, not the API's JSON one.
        console.get("/**") { _, _ -> Response in throw APIError.notFound("There is no such page in the console") }
    }

    static func asset(_ text: String, type: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: type, .cacheControl: "public, max-age=3600"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// The headers every console response carries: nothing from elsewhere may run, frame or be
    /// framed, and no page is kept by a cache.
    static func secure(_ response: inout Response) {
        response.headers[.contentSecurityPolicy] =
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[HTTPField.Name("Cross-Origin-Opener-Policy")!] = "same-origin"
    }
}

/// Answers a page's refusal (a redirect to sign in, a 403, a 404, a ledger that does not answer)
/// as an HTML page, and puts the security headers on every console response.
struct ConsoleResponseMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let pages: ConsolePages

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let redirect as ConsoleRedirect {
            response = redirect.response
        } catch let refusal as ConsolePageError {
            response = pages.errorPage(refusal.error, request: request, context: context, cookies: refusal.cookies)
        } catch let error as APIError {
            response = pages.errorPage(error, request: request, context: context)
        } catch let error as any HTTPResponseError {
            response = pages.errorPage(
                APIError(status: Int(error.status.code), message: error.status.reasonPhrase), request: request, context: context)
        } catch let error as LedgerError {
            pages.console.logger.error("console page failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            response = pages.errorPage(
                APIError(status: 503, message: "The ledger did not answer; try again in a moment"), request: request, context: context)
        } catch {
            pages.console.logger.error("console page failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            response = pages.errorPage(
                APIError(status: 500, message: "Something went wrong on this node; the log says what"), request: request, context: context)
        }
        Console.secure(&response)
        return response
    }
}

/// Thrown to send the browser elsewhere (sign in first, or back to a page after a change).
struct ConsoleRedirect: Error {
    var location: String
    var cookies: [Cookie] = []

    var response: Response {
        var response = Response(status: .seeOther, headers: [.location: location])
        for cookie in cookies { response.setCookie(cookie) }
        return response
    }
}
