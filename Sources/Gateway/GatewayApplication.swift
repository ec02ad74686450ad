import Crypto
import Foundation
import HTTPTypes
import AsyncHTTPClient
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

/// What a router node is made of; built by the executable (or a test) and handed to `buildRouter`.
public struct GatewayDependencies: Sendable {
    public var configuration: GatewayConfiguration
    public var catalog: Catalog
    public var ledger: any LedgerStore
    public var transport: any UpstreamTransport
    /// Provider slug → API key sent upstream (read from each provider's `api_key_env`).
    public var providerKeys: [String: String]
    public var logger: Logger
    public var metrics: GatewayMetrics
    public var health: HealthTracker
    /// The node's leases on account credit, and the group commit (with its spool) behind them.
    public var credit: CreditLeases
    public var committer: SettlementCommitter
    /// The node's gossip membership; nil for a node running alone.
    public var cluster: ClusterNode?
    /// The client that forwards region-pinned requests to other nodes (one trusting the peers' CA
    /// when they serve HTTPS); nil uses the process-wide plain client.
    public var forwardingClient: HTTPClient?

    /// Without `credit`, the node keeps leases with default settings and spools to a new
    /// temporary directory (for tests; `signalbox serve` passes its own).
    public init(configuration: GatewayConfiguration, catalog: Catalog, ledger: any LedgerStore,
                transport: any UpstreamTransport, providerKeys: [String: String], logger: Logger,
                metrics: GatewayMetrics = GatewayMetrics(), health: HealthTracker = HealthTracker(),
                credit: CreditLeases? = nil, cluster: ClusterNode? = nil, forwardingClient: HTTPClient? = nil) {
        self.cluster = cluster
        self.forwardingClient = forwardingClient
        self.metrics = metrics
        self.health = health
        if let credit {
            self.credit = credit
            self.committer = credit.committer
        } else {
            let spoolPath = FileManager.default.temporaryDirectory
                .appendingPathComponent("signalbox-\(UUID().uuidString)/settlements.spool").path
            let committer = SettlementCommitter(store: ledger, spool: try? SettlementSpool(path: spoolPath), logger: logger,
                                                onCommit: { [metrics] in metrics.settlementBatch(size: $0) })
            self.committer = committer
            self.credit = CreditLeases(store: ledger, committer: committer, nodeID: configuration.nodeID,
                                       policy: LeasePolicy(ttl: configuration.holdTTL), logger: logger)
        }
        self.configuration = configuration
        self.catalog = catalog
        self.ledger = ledger
        self.transport = transport
        self.providerKeys = providerKeys
        self.logger = logger
    }
}

/// Whether the node takes traffic: false before start-up completes and while draining.
public final class Readiness: Sendable {
    private let state = NIOLockedValueBox(false)
    public init(ready: Bool = false) { state.withLockedValue { $0 = ready } }
    public var isReady: Bool { state.withLockedValue { $0 } }
    public func set(_ ready: Bool) { state.withLockedValue { $0 = ready } }
}

/// The HTTP API of a router node.
public struct Gateway: Sendable {
    let dependencies: GatewayDependencies
    let pipeline: ChatPipeline
    let authenticator: KeyAuthenticator
    let catalogResponses: CatalogResponses
    public let readiness: Readiness

    public init(_ dependencies: GatewayDependencies, readiness: Readiness = Readiness(ready: true)) {
        self.dependencies = dependencies
        self.readiness = readiness
        pipeline = ChatPipeline(
            catalog: dependencies.catalog,
            planner: RoutingPlanner(catalog: dependencies.catalog, loadBalancing: dependencies.configuration.loadBalancing),
            ledger: dependencies.ledger, credit: dependencies.credit, transport: dependencies.transport,
            configuration: dependencies.configuration,
            providerKeys: dependencies.providerKeys, logger: dependencies.logger, metrics: dependencies.metrics,
            health: dependencies.health, cluster: dependencies.cluster)
        authenticator = KeyAuthenticator(ledger: dependencies.ledger, committer: dependencies.committer)
        catalogResponses = CatalogResponses(catalog: dependencies.catalog)
    }

    static let routes: [(String, [HTTPRequest.Method])] = [
        ("/healthz", [.get]), ("/readyz", [.get]),
        ("/api/v1/chat/completions", [.post]), ("/api/v1/models", [.get]),
        ("/api/v1/models/:author/:slug/endpoints", [.get]), ("/api/v1/providers", [.get]),
        ("/api/v1/key", [.get]), ("/api/v1/auth/key", [.get]), ("/api/v1/credits", [.get]),
        ("/api/v1/generation", [.get]), ("/metrics", [.get]),
        ("/api/v1/keys", [.get, .post]), ("/api/v1/keys/:hash", [.get, .patch, .delete]),
        ("/api/v1/admin/accounts", [.post]), ("/api/v1/admin/accounts/:account", [.patch]),
        ("/api/v1/admin/accounts/:account/balance", [.get]),
        ("/api/v1/admin/credits", [.post]), ("/api/v1/admin/ledger/entries", [.get]),
        ("/api/v1/admin/ledger/spend", [.get]), ("/api/v1/admin/ledger/verify", [.get]),
        ("/api/v1/admin/cluster/members", [.get]), ("/api/v1/admin/cluster/health", [.get]), ("/api/v1/admin/cluster/keyring", [.get]),
        ("/api/v1/admin/cluster/state", [.get]),
        ("/api/v1/admin/routing/:region", [.get, .put]),
    ]

    public func buildRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.middlewares.add(JSONErrorMiddleware(knownRoutes: Self.routes.map { path, methods in
            (path.split(separator: "/"), Set(methods))
        }))
        router.middlewares.add(MetricsMiddleware(metrics: dependencies.metrics))
        router.get("/healthz") { _, _ in JSONResponse.make(["status": "ok"]) }
        router.get("/metrics") { _, _ in
            if let cluster = dependencies.cluster {
                dependencies.metrics.gossip(stats: await cluster.agent.stats, members: await cluster.agent.members,
                                            awareness: await cluster.agent.awareness, socketUp: cluster.agent.isSocketUp,
                                            queued: await cluster.agent.queuedUpdates)
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(bytes: dependencies.metrics.exposition())))
        }
        let committer = dependencies.committer
        let cluster = dependencies.cluster
        router.get("/readyz") { _, _ in
            guard readiness.isReady else { return APIError(status: 503, message: "This node is not ready to serve").jsonResponse() }
            if let cluster, !cluster.agent.isJoined {
                if let other = cluster.agent.conflict {
                    return APIError(status: 503, message: "This node has not joined the cluster: another live node already uses the id "
                                    + "'\(other.id)' (at \(other.address)); give this node its own --node-id",
                                    metadata: ["reason": "node_id_conflict"]).jsonResponse()
                }
                return APIError(status: 503, message: "This node has not joined the cluster yet: no seed has answered a state exchange "
                                + "(a seed that closes the connection without answering holds a different cluster key; see the log)",
                                metadata: ["reason": "not_joined"]).jsonResponse()
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
        api.post("/chat/completions") { request, context in try await chatCompletions(request, context: context) }
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
        api.get("/key") { request, _ in try await keyInfo(request) }
        api.get("/auth/key") { request, _ in try await keyInfo(request) }
        api.get("/credits") { request, _ in try await credits(request) }
        api.get("/generation") { request, _ in try await generation(request) }
        registerKeyRoutes(api)
        registerAdminLedgerRoutes(api)
        registerClusterRoutes(api)
        return router
    }

    // MARK: Chat completions

    func chatCompletions(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let key = try await authenticator.authenticate(authorization: request.headers[.authorization])
        if key.isAdmin {
            throw APIError(status: 403, message: "Admin keys cannot call models; use an inference key")
        }
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: dependencies.configuration.maxBodyBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw APIError(status: 413, message: "Request body is larger than \(dependencies.configuration.maxBodyBytes) bytes")
        }
        if let region = key.pinnedRegion, region != dependencies.configuration.region {
            return try await forwardToRegion(region, request: request, body: body)
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(body.readableBytesView)
        } catch {
            throw APIError.badRequest("Request body is not valid JSON")
        }
        let chat = try ChatRequest(json: json)
        let idempotencyKey = request.headers[Self.idempotencyHeader].flatMap { $0.isEmpty ? nil : $0 }
        if let idempotencyKey, idempotencyKey.utf8.count > 256 {
            throw APIError.badRequest("Idempotency-Key is longer than 256 bytes")
        }
        // The Idempotency-Key is claimed before any credit is reserved: a replay or a conflict
        // touches no money.
        let generationID = ChatPipeline.makeGenerationID()
        if let idempotencyKey, let stored = try await claimIdempotencyKey(
            idempotencyKey, key: key, generationID: generationID, request: chat, body: json) {
            return stored
        }
        let prepared: PreparedChat
        do {
            prepared = try await pipeline.prepare(chat, key: key, generationID: generationID, idempotencyKey: idempotencyKey)
        } catch {
            if let idempotencyKey {
                // Nothing ran: a retry may claim the key again.
                let (ledger, account) = (dependencies.ledger, key.accountID)
                try? await pipeline.ledgerCall {
                    try await ledger.releaseIdempotencyClaim(account: account, key: idempotencyKey, generationID: generationID)
                }
            }
            throw error
        }
        if chat.stream { return streamResponse(prepared) }

        switch await runWatchingClient(prepared, channel: context.channel) {
        case .success(let result, let cost):
            return JSONResponse.make(ChatPipeline.completion(prepared, result: result, cost: cost),
                                     headers: [Self.generationHeader: prepared.generationID])
        case .failure(let error, _):
            var response = error.jsonResponse()
            response.headers[Self.generationHeader] = prepared.generationID
            return response
        case .cancelled:
            return APIError(status: 499, message: "Client closed the request").jsonResponse()
        }
    }

    /// Runs a non-streamed request while watching the client's connection: a client that leaves
    /// cancels the upstream call, and the tokens generated until then are charged, as for streams.
    func runWatchingClient(_ prepared: PreparedChat, channel: (any Channel)?) async -> ChatPipeline.Outcome {
        let pipeline = self.pipeline
        guard let channel else { return await pipeline.run(prepared, emit: nil) }
        // HTTP clients do not half-close a connection they still read from: end-of-input means gone.
        try? await channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
        return await withTaskGroup(of: ChatPipeline.Outcome?.self) { group in
            group.addTask { await pipeline.run(prepared, emit: nil) }
            group.addTask {
                _ = try? await pipeline.watch.wait { channel.isActive ? nil : () }
                return nil
            }
            while let next = await group.next() {
                if let outcome = next {
                    group.cancelAll()
                    return outcome
                }
                if !channel.isActive { group.cancelAll() }  // the client left: stop the work
            }
            return .cancelled
        }
    }

    static let generationHeader = HTTPField.Name("X-Generation-Id")!
    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")!

    /// Claims the request's `Idempotency-Key`. Returns the first result's response when a request
    /// with the key already succeeded; refuses with 409 while one is running, and with 422 when
    /// the key was used for a different request (another body or API key), as Stripe does.
    func claimIdempotencyKey(_ idempotencyKey: String, key: KeyRecord, generationID: String, request: ChatRequest,
                             body: JSONValue) async throws -> Response? {
        let ledger = dependencies.ledger
        let claimRequest = IdempotencyClaimRequest(
            account: key.accountID, key: idempotencyKey, generationID: generationID,
            fingerprint: Self.fingerprint(apiKey: key, body: body), staleAfter: dependencies.configuration.holdTTL)
        let claim = try await pipeline.ledgerCall { try await ledger.claimIdempotencyKey(claimRequest) }
        switch claim {
        case .claimed:
            return nil
        case .inProgress(let generationID):
            throw APIError(status: 409, message: "A request with this Idempotency-Key is still running",
                           metadata: ["generation_id": .string(generationID)])
        case .reused(let generationID):
            throw APIError(status: 422, message: "This Idempotency-Key was already used for a different request "
                + "(another body or API key). Use a new key for a new request.",
                metadata: ["error_type": "idempotency_key_reused", "generation_id": .string(generationID)])
        case .completed(let generationID, let stored):
            let completion = (try? JSONParser.parse(stored)) ?? [:]
            var response = request.stream ? Self.replayStream(completion) : JSONResponse.make(completion)
            response.headers[Self.generationHeader] = generationID
            response.headers[Self.idempotencyHeader] = idempotencyKey
            return response
        }
    }

    /// What identifies a request for its `Idempotency-Key`: the API key and the body as parsed
    /// (so whitespace does not matter, but every field and the `stream` flag do).
    static func fingerprint(apiKey: KeyRecord, body: JSONValue) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(apiKey.id.utf8))
        hasher.update(data: [0])
        hasher.update(data: JSONWriter.bytes(body))
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// A stored completion, streamed as if it were new: its message in one chunk, the finish
    /// chunk, the usage chunk and `[DONE]`.
    static func replayStream(_ completion: JSONValue) -> Response {
        var common: JSONObject = ["object": "chat.completion.chunk"]
        for field in ["id", "provider", "model", "created", "system_fingerprint"] { common[field] = completion[field] }
        var events: [ByteBuffer] = [ByteBuffer(string: ": SIGNALBOX PROCESSING\n\n")]
        for choice in completion["choices"]?.arrayValue ?? [] {
            var delta = choice["message"]?.objectValue ?? JSONObject()
            if let calls = delta["tool_calls"]?.arrayValue {
                delta["tool_calls"] = .array(calls.enumerated().map { index, call in
                    var indexed = call.objectValue ?? JSONObject()
                    indexed["index"] = .int(Int64(index))
                    return .object(indexed)
                })
            }
            var chunk = common
            chunk["choices"] = [["index": choice["index"] ?? 0, "delta": .object(delta), "finish_reason": nil, "logprobs": nil]]
            events.append(sse(.object(chunk)))
            chunk["choices"] = [["index": choice["index"] ?? 0, "delta": [:], "finish_reason": choice["finish_reason"] ?? nil,
                                 "native_finish_reason": choice["native_finish_reason"] ?? nil, "logprobs": nil]]
            events.append(sse(.object(chunk)))
        }
        var usage = common
        usage["choices"] = []
        usage["usage"] = completion["usage"] ?? nil
        events.append(sse(.object(usage)))
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        var body = ByteBuffer()
        for var event in events { body.writeBuffer(&event) }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: .init(byteBuffer: body))
    }

    /// An SSE response: a processing comment at once and every few seconds until the first
    /// token, each upstream delta re-labelled and written as it arrives, then the usage chunk
    /// and `[DONE]`. A client that hangs up cancels the upstream call.
    func streamResponse(_ prepared: PreparedChat) -> Response {
        let pipeline = self.pipeline
        let keepAlive = dependencies.configuration.keepAliveInterval
        let header = ByteBuffer(string: ": SIGNALBOX PROCESSING\n\n")
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
            body: ResponseBody { writer in
                do {
                    try await writer.write(header)
                } catch {
                    await pipeline.abandon(prepared)  // the client left before anything ran
                    throw error
                }
                let (events, continuation) = AsyncStream<ByteBuffer>.makeStream()
                let firstData = NIOLockedValueBox(false)
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let outcome = await pipeline.run(prepared) { delta, attempt in
                            firstData.withLockedValue { $0 = true }
                            continuation.yield(Self.chunk(delta, prepared: prepared, attempt: attempt))
                        }
                        for buffer in Self.closingEvents(outcome, prepared: prepared) { continuation.yield(buffer) }
                        continuation.finish()
                    }
                    group.addTask {
                        while !firstData.withLockedValue({ $0 }) {
                            try await Task.sleep(for: keepAlive)
                            if !firstData.withLockedValue({ $0 }) { continuation.yield(header) }
                        }
                    }
                    do {
                        for await buffer in events { try await writer.write(buffer) }
                    } catch {
                        group.cancelAll()  // the client is gone: cancel the upstream call
                        continuation.finish()
                    }
                    group.cancelAll()
                    try? await group.waitForAll()
                }
                try await writer.finish(nil)
            })
    }

    static func sse(_ value: JSONValue) -> ByteBuffer {
        var bytes = Array("data: ".utf8)
        JSONWriter.write(value, into: &bytes)
        bytes.append(contentsOf: "\n\n".utf8)
        return ByteBuffer(bytes: bytes)
    }

    static func chunk(_ delta: CompletionDelta, prepared: PreparedChat, attempt: PlannedAttempt) -> ByteBuffer {
        var object: JSONObject = [
            "id": .string(prepared.generationID), "provider": .string(attempt.provider.name),
            "model": .string(attempt.model.id), "object": "chat.completion.chunk", "created": .int(prepared.created),
        ]
        if let fingerprint = delta.systemFingerprint { object["system_fingerprint"] = .string(fingerprint) }
        object["choices"] = .array(delta.choices)
        return sse(.object(object))
    }

    static func closingEvents(_ outcome: ChatPipeline.Outcome, prepared: PreparedChat) -> [ByteBuffer] {
        switch outcome {
        case .success(let result, let cost):
            let usage = result.usage ?? TokenUsage()
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
                    "model": .string(result.attempt.model.id), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "choices": [], "usage": ChatPipeline.usageJSON(usage, cost: cost),
                ]),
                ByteBuffer(string: "data: [DONE]\n\n"),
            ]
        case .failure(let error, _):
            let provider = error.metadata?["provider_name"] ?? nil
            guard case .object(let errorBody)? = error.body["error"] else { return [] }
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": provider,
                    "model": .string(prepared.request.requestedModel), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "error": .object(errorBody),
                    "choices": [["index": 0, "delta": ["content": ""], "finish_reason": "error",
                                 "native_finish_reason": "error", "logprobs": nil]],
                ]),
                ByteBuffer(string: "data: [DONE]\n\n"),
            ]
        case .cancelled:
            return []
        }
    }

    // MARK: Account endpoints

    func keyInfo(_ request: Request) async throws -> Response {
        let key = try await authenticator.authenticate(authorization: request.headers[.authorization])
        let ledger = dependencies.ledger
        let usage = try await ledger.keyUsage(keyID: key.id, now: Date())
        let purchasedTotal = try await ledger.purchasedTotal(account: key.accountID)
        let purchased = purchasedTotal > .zero
        let dailyFree = FreeTier.dailyLimit(purchased: purchasedTotal)
        let usedFree = try await ledger.freeRequestCount(account: key.accountID, since: [UsageWindows(now: Date()).day])[0]
        let limitUsage = usage.spent(resetting: key.limitReset)
        let remaining = key.limit.map { max($0 - limitUsage, .zero) }
        return JSONResponse.make(["data": [
            "label": .string(key.label), "name": .string(key.name),
            "limit": key.limit.map { .number($0) } ?? nil, "limit_remaining": remaining.map { .number($0) } ?? nil,
            "limit_reset": key.limitReset.map { .string($0) } ?? nil, "include_byok_in_limit": false,
            "usage": .number(usage.total), "usage_daily": .number(usage.daily), "usage_weekly": .number(usage.weekly),
            "usage_monthly": .number(usage.monthly),
            "byok_usage": 0, "byok_usage_daily": 0, "byok_usage_weekly": 0, "byok_usage_monthly": 0,
            "is_free_tier": .bool(!purchased), "is_management_key": .bool(key.isAdmin), "is_provisioning_key": .bool(key.isAdmin),
            "expires_at": key.expiresAt.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? nil,
            "creator_user_id": .string(key.accountID), "organization_id": nil, "workspace_id": nil,
            "allowed_data_regions": ["global", "europe", "us"], "budgets": [], "effective_budget": nil,
            "free_model_daily_requests": ["limit": .int(Int64(dailyFree)), "remaining": .int(Int64(max(dailyFree - usedFree, 0))),
                                          "used": .int(Int64(usedFree))],
            "rate_limit": ["requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."],
        ]])
    }

    func credits(_ request: Request) async throws -> Response {
        let key = try await authenticator.authenticate(authorization: request.headers[.authorization])
        let totals = try await dependencies.ledger.creditTotals(account: key.accountID)
        return JSONResponse.make(["data": ["total_credits": .number(totals.credits), "total_usage": .number(totals.usage)]])
    }

    func generation(_ request: Request) async throws -> Response {
        let key = try await authenticator.authenticate(authorization: request.headers[.authorization])
        guard let id = request.uri.queryParameters.get("id"), !id.isEmpty else {
            throw APIError.badRequest("The 'id' query parameter is required")
        }
        guard let record = try await dependencies.ledger.generation(id: id), key.isAdmin || record.accountID == key.accountID else {
            throw APIError.notFound("Generation \(id) not found")
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return JSONResponse.make(["data": [
            "id": .string(record.id), "upstream_id": record.upstreamID.map { .string($0) } ?? nil,
            "request_id": .string(record.id), "created_at": .string(formatter.string(from: record.createdAt)),
            "model": .string(record.model), "provider_name": record.providerName.map { .string($0) } ?? nil,
            "provider_tag": record.providerTag.map { .string($0) } ?? nil,
            "router": nil, "api_type": "completions", "app_id": nil, "origin": "", "http_referer": nil, "user_agent": nil,
            "external_user": nil, "streamed": .bool(record.streamed), "cancelled": .bool(record.cancelled),
            "is_byok": false, "latency": .int(Int64(record.latencyMs)), "generation_time": .int(Int64(record.generationTimeMs)),
            "moderation_latency": nil,
            "tokens_prompt": .int(Int64(record.usage.promptTokens)), "tokens_completion": .int(Int64(record.usage.completionTokens)),
            "native_tokens_prompt": .int(Int64(record.usage.promptTokens)),
            "native_tokens_completion": .int(Int64(record.usage.completionTokens)),
            "native_tokens_reasoning": .int(Int64(record.usage.reasoningTokens)),
            "native_tokens_cached": .int(Int64(record.usage.cachedTokens)), "native_tokens_completion_images": 0,
            "num_media_prompt": 0, "num_media_completion": 0, "num_input_audio_prompt": 0, "num_search_results": 0,
            "num_fetches": 0, "finish_reason": record.finishReason.map { .string($0) } ?? nil,
            "native_finish_reason": record.nativeFinishReason.map { .string($0) } ?? nil,
            "total_cost": .number(record.cost), "usage": .number(record.cost), "upstream_inference_cost": nil,
            "cache_discount": nil, "data_region": "global", "service_tier": nil, "preset_id": nil, "session_id": nil,
            "workspace_id": nil, "web_search_engine": nil,
            "provider_responses": .array(record.attempts.map { attempt in
                [
                    "provider": .string(attempt.providerName), "tag": .string(attempt.provider),
                    "model": .string(attempt.model), "status": Int64(attempt.status).map { .int($0) } ?? nil,
                    "error": attempt.error.map { .string($0) } ?? nil, "latency": .int(Int64(attempt.latencyMs)),
                ]
            }),
        ]])
    }
}

extension Gateway {
    /// The Hummingbird application of a node: the executable and the tests both build it here.
    /// `onRunning` receives the bound port (useful with port 0).
    public func buildApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let configuration = dependencies.configuration
        let readiness = self.readiness
        let server: HTTPServerBuilder = try configuration.serverTLS.map { try .tls(.http1(), tlsConfiguration: $0) } ?? .http1()
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

/// Turns readiness off as soon as a graceful shutdown starts (SIGTERM), so load balancers
/// stop sending new requests while in-flight streams finish.
public struct DrainOnShutdownService: Service {
    let readiness: Readiness
    let onDrain: @Sendable () async -> Void

    /// `onDrain` runs once readiness is off (a cluster node announces it is leaving).
    public init(readiness: Readiness, onDrain: @escaping @Sendable () async -> Void = {}) {
        self.readiness = readiness
        self.onDrain = onDrain
    }

    public func run() async throws {
        try? await gracefulShutdown()
        readiness.set(false)
        await onDrain()
    }
}
