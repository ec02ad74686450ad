import Hummingbird
import Ledger
import NIOCore
import SignalboxCore

/// The request context of the gateway's routes: Hummingbird's core context plus the client's
/// connection, which a non-streamed request watches so that a client who leaves stops the work.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's connection (nil when the context was not made for a live connection).
    public let channel: (any Channel)?
    /// The caller's key, once `KeyAuthentication` has checked it.
    public var key: KeyRecord?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The context of a route that needs an API key: the gateway context with the caller's key,
/// which `KeyAuthentication` resolved before the route runs.
public struct AuthenticatedRequestContext: ChildRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: (any Channel)?
    public let key: KeyRecord

    public init(context: GatewayRequestContext) throws {
        // Unreachable behind `KeyAuthentication`; a route registered outside it still answers 401.
        guard let key = context.key else { throw APIError.unauthorized() }
        coreContext = context.coreContext
        channel = context.channel
        self.key = key
    }

    /// The caller as the audit trail records it.
    func actor(node: String) -> AuditActor {
        AuditActor(id: AuditActor.key(key), role: key.adminRole, node: node, sourceAddress: channel?.remoteAddress?.ipAddress)
    }
}
