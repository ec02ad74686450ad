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

extension RouterAPI {
    // MARK: Chat completions

    func chatCompletions(_ request: Request, context: AuthenticatedRequestContext) async throws -> Response {
        try await serveChat(request, context: context, surface: ChatCompletionsSurface())
    }

    /// Runs a request of any surface on the chat pipeline (see `ChatSurface`).
    func serveChat(_ request: Request, context: AuthenticatedRequestContext, surface: some ChatSurface) async throws -> Response {
        let started = ContinuousClock.now
        var model: String?
        let trace = pipeline.tracer.map {
            RequestTrace(tracer: $0, method: request.method, route: request.uri.path, headers: request.headers)
        }
        trace?.describe(key: context.key, region: dependencies.configuration.region)
        do {
            let response = try await runChat(request, context: context, surface: surface, started: started, model: &model, trace: trace)
            // A request that ran ends its span when it settles; a replayed or forwarded one here.
            trace?.answered(status: Int(response.status.code))
            return response
        } catch let error as ChatRefusal {
            // Refused before any attempt ran: no settlement writes this request's access line.
            let refusal = error.error as? APIError ?? APIError(status: 400, message: "\(error.error)")
            pipeline.accessLog.refused(route: request.uri.path, key: context.key, model: model, error: refusal, started: started)
            trace?.answered(status: refusal.statusCode) { span in
                span.attributes["error.type"] = refusal.errorType
                span.recordError(refusal)
            }
            throw error.error
        }
    }

    /// An error thrown before the request was prepared (nothing settles it).
    struct ChatRefusal: Error {
        var error: any Error
    }

    func runChat(
        _ request: Request, context: AuthenticatedRequestContext, surface: some ChatSurface, started: ContinuousClock.Instant,
        model: inout String?, trace: RequestTrace?
    ) async throws -> Response {
        let key = context.key
        // Errors until the request is prepared are refusals: nothing ran, nothing settles.
        func refusing<T>(_ step: () async throws -> T) async throws -> T {
            do { return try await step() } catch { throw ChatRefusal(error: error) }
        }
        // The reservation goes back when the last holder lets go: this call, or the prepared
        // request that a stream's body still uses after this returns.
        let (body, reservation) = try await refusing { try await readModelRequestBody(request, key: key) }
        if let region = key.pinnedRegion, region != dependencies.configuration.region {
            let forwarded = try await refusing { try await forwardToRegion(region, request: request, body: body, trace: trace) }
            pipeline.accessLog.answered(
                route: request.uri.path, key: key, model: nil, outcome: "forwarded", status: Int(forwarded.status.code), started: started)
            return forwarded
        }
        let chat = try await refusing { try surface.chatRequest(from: body, headers: request.headers) }
        model = chat.requestedModel
        let idempotencyKey = request.headers[Self.idempotencyHeader].flatMap { $0.isEmpty ? nil : $0 }
        if let idempotencyKey, idempotencyKey.utf8.count > 256 {
            throw ChatRefusal(error: APIError.badRequest("Idempotency-Key is longer than 256 bytes"))
        }
        // The Idempotency-Key is claimed before any credit is reserved: a replay or a conflict
        // touches no money.
        let generationID = ChatPipeline.makeGenerationID()
        trace?.describe(request: chat, generationID: generationID)
        if let idempotencyKey,
            let stored = try await refusing({
                try await claimIdempotencyKey(
                    idempotencyKey, key: key, generationID: generationID, request: chat, surface: surface,
                    fingerprinted: surface is ChatCompletionsSurface
                        ? .object(chat.parsedBody())
                        // A front's own body, not its translation (which leaves things out), and its route.
                        : ["route": .string(request.uri.path), "body": (try? .object(ChatCompletionsSurface.object(body))) ?? nil])
            })
        {
            pipeline.accessLog.answered(
                route: request.uri.path, key: key, model: chat.requestedModel, outcome: "replayed", status: Int(stored.status.code),
                started: started)
            return stored
        }
        let prepared: PreparedChat
        do {
            prepared = try await pipeline.prepare(
                chat, key: key, generationID: generationID, idempotencyKey: idempotencyKey, trace: trace)
            prepared.hold(bodyMemory: reservation)
        } catch {
            if let idempotencyKey {
                // Nothing ran: a retry may claim the key again.
                let (ledger, account) = (dependencies.ledger, key.accountID)
                try? await pipeline.ledgerCall {
                    try await ledger.releaseIdempotencyClaim(account: account, key: idempotencyKey, generationID: generationID)
                }
            }
            throw ChatRefusal(error: error)
        }
        if chat.stream {
            let translator = surface.makeStream(generationID: generationID, model: chat.requestedModel)
            if surface.holdsStreamHead, let translator {
                return await heldStreamResponse(prepared, translator: translator, channel: context.channel, surface: surface)
            }
            return streamResponse(prepared, translator: translator)
        }

        switch await runWatchingClient(prepared, channel: context.channel) {
        case .success(let result, let cost):
            return JSONResponse.make(
                surface.response(to: ChatResponses.completion(prepared, result: result, cost: cost), of: chat),
                headers: [Self.generationHeader: prepared.generationID])
        case .failure(let error, _):
            var response = surface.errorResponse(error)
            response.headers[Self.generationHeader] = prepared.generationID
            return response
        case .cancelled:
            return surface.errorResponse(APIError(status: 499, message: "Client closed the request"))
        }
    }

    /// Runs a non-streamed request while watching the client's connection: a client that leaves
    /// cancels the upstream call, and the tokens generated until then are charged, as for streams.
    func runWatchingClient(_ prepared: PreparedChat, channel: (any Channel)?) async -> ChatPipeline.RequestOutcome {
        guard let channel else { return await pipeline.run(prepared, emit: nil) }
        // HTTP clients do not half-close a connection they still read from: end-of-input means gone.
        try? await channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
        return await pipeline.run(prepared, emit: nil, clientGone: { !channel.isActive })
    }

    static let generationHeader = HTTPField.Name("X-Generation-Id")!
    static let idempotencyHeader = HTTPField.Name("Idempotency-Key")!

    /// Claims the request's `Idempotency-Key`. Returns the first result's response when a request
    /// with the key already succeeded; refuses with 409 while one is running, and with 422 when
    /// the key was used for a different request (another body or API key), as Stripe does.
    func claimIdempotencyKey(
        _ idempotencyKey: String, key: KeyRecord, generationID: String, request: ChatRequest, surface: some ChatSurface,
        fingerprinted: JSONValue
    ) async throws -> Response? {
        let ledger = dependencies.ledger
        let claimRequest = IdempotencyClaimRequest(
            account: key.accountID, key: idempotencyKey, generationID: generationID,
            fingerprint: Self.fingerprint(apiKey: key, body: fingerprinted), staleAfter: dependencies.configuration.holdTTL)
        let claim = try await pipeline.ledgerCall { try await ledger.claimIdempotencyKey(claimRequest) }
        switch claim {
        case .claimed:
            return nil
        case .inProgress(let generationID):
            throw APIError(
                status: 409, message: "A request with this Idempotency-Key is still running",
                metadata: ["generation_id": .string(generationID)])
        case .reused(let generationID):
            throw APIError(
                status: 422,
                message: "This Idempotency-Key was already used for a different request "
                    + "(another body or API key). Use a new key for a new request.",
                metadata: ["error_type": "idempotency_key_reused", "generation_id": .string(generationID)])
        case .completed(let generationID, let stored):
            let completion = (try? JSONParser.parse(stored)) ?? [:]
            var response =
                request.stream
                ? ChatResponses.replayStream(
                    completion,
                    translator: surface.makeStream(generationID: generationID, model: completion["model"]?.stringValue ?? ""))
                : JSONResponse.make(surface.response(to: completion, of: request))
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
}
