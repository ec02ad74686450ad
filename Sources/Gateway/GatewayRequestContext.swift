import Hummingbird
import NIOCore

/// The request context of the gateway's routes: Hummingbird's core context plus the client's
/// connection, which a non-streamed request watches so that a client who leaves stops the work.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's connection (nil when the context was not made for a live connection).
    public let channel: (any Channel)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
