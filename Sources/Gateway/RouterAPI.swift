import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

/// Routes a module outside the gateway adds to a node's router (the operator console).
public protocol RouterExtension: Sendable {
    func register(on router: Router<GatewayRequestContext>, api: RouterAPI)
}

/// The HTTP API of a router node.
public struct RouterAPI: Sendable {
    public let dependencies: GatewayDependencies
    let pipeline: ChatPipeline
    public let authenticator: KeyAuthenticator
    let catalogResponses: CatalogResponses
    public let readiness: Readiness
    /// Counts client connections against `configuration.connections`.
    let connectionLimiter: ConnectionLimiter
    /// Memory large request bodies may take at once.
    let bodyBudget: BodyBudget
    /// Every admin change goes through here: roles, validation, the audit trail.
    public let administration: Administration
    public var nodeID: String { dependencies.configuration.nodeID }
    /// Routes other modules add (the console).
    let extensions: [any RouterExtension]

    public init(_ dependencies: GatewayDependencies, readiness: Readiness, extensions: [any RouterExtension] = []) {
        self.dependencies = dependencies
        self.extensions = extensions
        self.readiness = readiness
        pipeline = ChatPipeline(
            catalog: dependencies.catalog,
            planner: RoutingPlanner(catalog: dependencies.catalog, loadBalancing: dependencies.configuration.loadBalancing),
            ledger: dependencies.ledger, credit: dependencies.credit, transport: dependencies.transport,
            configuration: dependencies.configuration,
            providerKeys: dependencies.providerKeys, logger: dependencies.logger, metrics: dependencies.metrics,
            health: dependencies.health, cluster: dependencies.cluster, tracer: dependencies.tracer,
            alerts: dependencies.alerts)
        let authenticator = KeyAuthenticator(ledger: dependencies.ledger, committer: dependencies.committer)
        self.authenticator = authenticator
        administration = Administration(
            ledger: dependencies.ledger, cluster: dependencies.cluster, catalog: dependencies.catalog,
            keysChanged: { authenticator.invalidate() })
        catalogResponses = CatalogResponses(catalog: dependencies.catalog)
        let limits = dependencies.configuration.connections
        connectionLimiter = ConnectionLimiter(
            perAddress: limits.perAddress, total: limits.effectiveTotal, exempt: limits.exemptAddresses)
        // A body waits for room less long than the connection waits for that body.
        bodyBudget = BodyBudget(
            capacity: dependencies.configuration.bodyMemoryBudget, wait: min(.seconds(50), limits.bodyTimeout * 0.8))
    }

    public func buildRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        // 404 and 405 are told apart from the routes registered below, read from a router of their own.
        router.middlewares.add(JSONErrorMiddleware(routes: RouteTable(of: registerRoutes)))
        router.middlewares.add(MetricsMiddleware(metrics: dependencies.metrics))
        registerRoutes(on: router)
        return router
    }

    /// Every route this API registers (its extensions' too), as `METHOD /path` with `{name}`
    /// parameters, the form `APIDocument.routes` uses.
    public var registeredRoutes: [String] {
        RouteTable(of: registerRoutes).routes.flatMap { route in
            route.methods.map { "\($0.rawValue) \(route.path.description)" }
        }.sorted()
    }

    func registerRoutes(on router: Router<GatewayRequestContext>) {
        router.get("/healthz") { _, _ in JSONResponse.make(["status": "ok"]) }
        let limiter = connectionLimiter
        let metricsNeedAdmin = dependencies.configuration.metricsRequireAdminKey
        router.get("/metrics") { request, _ in
            if metricsNeedAdmin {
                let key = try await authenticator.authenticate(authorization: request.headers[.authorization])
                guard key.isAdmin else { throw APIError(status: 403, message: "/metrics on this node needs the operator admin key") }
            }
            let connections = limiter.counts
            dependencies.metrics.connections(open: connections.open, refused: connections.refused)
            dependencies.metrics.ledger(status: await dependencies.committer.currentStatus, leases: await dependencies.credit.leases)
            if let cluster = dependencies.cluster {
                dependencies.metrics.gossip(
                    stats: await cluster.agent.stats, members: await cluster.agent.members,
                    awareness: await cluster.agent.awareness, socketUp: cluster.agent.isSocketUp,
                    queued: await cluster.agent.queuedUpdates)
            }
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(bytes: dependencies.metrics.exposition())))
        }
        let committer = dependencies.committer
        let cluster = dependencies.cluster
        router.get("/readyz") { _, _ in
            guard readiness.isReady else {
                return APIError(
                    status: 503, message: "This node is not ready to serve (starting, or draining after SIGTERM)",
                    metadata: ["reason": "not_ready"]
                ).jsonResponse()
            }
            if let cluster, !cluster.agent.isJoined {
                if let other = cluster.agent.conflict {
                    return APIError(
                        status: 503,
                        message: "This node has not joined the cluster: another live node already uses the id "
                            + "'\(other.id)' (at \(other.address)); give this node its own --node-id",
                        metadata: ["reason": "node_id_conflict"]
                    ).jsonResponse()
                }
                return APIError(
                    status: 503,
                    message: "This node has not joined the cluster yet: no seed has answered a state exchange "
                        + "(a seed that closes the connection without answering holds a different cluster key; see the log)",
                    metadata: ["reason": "not_joined"]
                ).jsonResponse()
            }
            // Still ready while the ledger is down: requests its leases cover are served and
            // their charges spooled; the body says the node is degraded.
            let ledger = await committer.currentStatus
            let gossipUp = cluster?.agent.isSocketUp ?? true
            let healthy = ledger.ledgerReachable && ledger.spooled == 0 && gossipUp
            var body: JSONObject = [
                "status": healthy ? "ready" : "degraded",
                "ledger": ledger.ledgerReachable ? (ledger.spooled == 0 ? "ok" : "replaying") : "unreachable",
                "spooled_settlements": .int(Int64(ledger.spooled)),
            ]
            if cluster != nil { body["gossip"] = gossipUp ? "ok" : "down" }
            return JSONResponse.make(.object(body))
        }
        let api = router.group("/api/v1")
        // The catalog is public, as on OpenRouter; everything else needs a key.
        api.get("/models") { _, _ in JSONResponse.make(catalogResponses.models) }
        api.get("/models/:author/:slug/endpoints") { _, context in
            let author = context.parameters.get("author") ?? ""
            let slug = context.parameters.get("slug") ?? ""
            guard let body = catalogResponses.endpoints(modelID: "\(author)/\(slug)", health: dependencies.health) else {
                throw APIError.notFound("Model \(author)/\(slug) not found")
            }
            return JSONResponse.make(body)
        }
        api.get("/providers") { _, _ in JSONResponse.make(catalogResponses.providers) }
        api.get("/openapi.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: APIDocument.served)))
        }
        let inference = api.authenticated(.inferenceKey, by: authenticator)
        inference.post("/chat/completions") { request, context in try await chatCompletions(request, context: context) }
        inference.post("/completions") { request, context in
            try await serveChat(request, context: context, surface: LegacyCompletionsSurface())
        }
        let embeddings = EmbeddingsSurface(catalog: dependencies.catalog)
        inference.post("/embeddings") { request, context in try await serveChat(request, context: context, surface: embeddings) }
        inference.post("/responses") { request, context in
            try await serveChat(request, context: context, surface: OpenAIResponsesSurface())
        }
        // Anthropic's Messages API: its errors, authentication's included, in Anthropic's shape.
        let messages = api.group()
            .add(middleware: AnthropicErrorMiddleware<GatewayRequestContext>())
            .authenticated(.inferenceKey, by: authenticator, acceptingAPIKeyHeader: true)
        let anthropic = AnthropicMessagesSurface(catalog: dependencies.catalog)
        messages.post("/messages") { request, context in try await serveChat(request, context: context, surface: anthropic) }
        messages.post("/messages/count_tokens") { request, context in
            let (body, reservation) = try await readModelRequestBody(request, key: context.key)
            defer { reservation.release() }
            return JSONResponse.make(try anthropic.countTokens(body))
        }
        // Routes that read the ledger directly answer within a deadline even while it is out of reach.
        let ledgerBound = api.group().add(middleware: AnswerDeadlineMiddleware(timeout: dependencies.configuration.adminTimeout))
        let account = ledgerBound.authenticated(.anyKey, by: authenticator)
        account.get("/key") { _, context in try await keyInfo(context.key) }
        account.get("/auth/key") { _, context in try await keyInfo(context.key) }
        account.get("/credits") { _, context in try await credits(context.key) }
        account.get("/generation") { request, context in try await generation(request, key: context.key) }
        let admin = ledgerBound.authenticated(.adminKey, by: authenticator)
        registerKeyRoutes(admin)
        registerAdminLedgerRoutes(admin)
        registerClusterRoutes(admin)
        registerAuditRoutes(admin)
        for routes in extensions { routes.register(on: router, api: self) }
    }
}

extension RouterAPI {
    /// The Hummingbird application of a node: the executable and the tests both build it here.
    /// `onRunning` receives the bound port (useful with port 0).
    public func buildApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let configuration = dependencies.configuration
        let readiness = self.readiness
        let limits = configuration.connections
        let limiter = connectionLimiter
        // Every connection is counted and held to its deadlines, inside TLS when served so.
        let http1 = HTTPServerBuilder { responder in
            GuardedChildChannel(
                HTTP1Channel(
                    responder: responder, configuration: .init(additionalChannelHandlers: [RequestDeadlineHandler(limits: limits)])),
                limiter: limiter)
        }
        let server: HTTPServerBuilder = try configuration.serverTLS.map { try .tls(http1, tlsConfiguration: $0) } ?? http1
        return Application(
            router: buildRouter(),
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "signalbox"),
            onServerRunning: { channel in
                readiness.set(true)
                await onRunning(channel.localAddress?.port ?? configuration.port)
            },
            logger: dependencies.logger)
    }
}
