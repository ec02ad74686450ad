import HTTPTypes
import Hummingbird
import SignalboxCore

/// Which keys may call a group of routes.
enum KeyRequirement: Sendable {
    /// Any valid key (account endpoints such as `/key` and `/credits`).
    case anyKey
    /// Keys that may call models; the operator admin key may not.
    case inferenceKey
    /// The operator admin key only (key management, the ledger, the cluster).
    case adminKey
}

/// Authenticates the `Authorization: Bearer` key of every request in its group and refuses keys
/// the group does not accept, before the route reads the body.
struct KeyAuthentication: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let authenticator: KeyAuthenticator
    let requirement: KeyRequirement
    /// Also read the key from `x-api-key` when there is no `Authorization` header, as Anthropic
    /// clients send it.
    var acceptsAPIKeyHeader = false

    static let apiKeyHeader = HTTPField.Name("x-api-key")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var authorization = request.headers[.authorization]
        if authorization == nil, acceptsAPIKeyHeader, let key = request.headers[Self.apiKeyHeader] { authorization = "Bearer \(key)" }
        let key = try await authenticator.authenticate(authorization: authorization)
        switch requirement {
        case .anyKey: break
        case .inferenceKey:
            if key.isAdmin { throw APIError(status: 403, message: "Admin keys cannot call models; use an inference key") }
        case .adminKey:
            if !key.isAdmin { throw APIError(status: 403, message: "Key management needs the operator admin key") }
        }
        var context = context
        context.key = key
        return try await next(request, context)
    }
}

extension RouterMethods where Context == GatewayRequestContext {
    /// A group whose routes run only for keys that meet `requirement`, and see the key in their context.
    func authenticated(
        _ requirement: KeyRequirement, by authenticator: KeyAuthenticator, acceptingAPIKeyHeader: Bool = false
    ) -> RouterGroup<AuthenticatedRequestContext> {
        group()
            .add(
                middleware: KeyAuthentication(
                    authenticator: authenticator, requirement: requirement, acceptsAPIKeyHeader: acceptingAPIKeyHeader)
            )
            .group(context: AuthenticatedRequestContext.self)
    }
}
