import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SignalboxCore

/// Timing of the simulated providers.
public struct SimulatorConfiguration: Sendable {
    /// Delay before the first token (and before a non-streamed answer).
    public var firstTokenDelay: Duration
    /// Delay between streamed tokens.
    public var interTokenDelay: Duration

    /// When set, every text answer is this many tokens (still cut at `max_tokens`): benchmarks
    /// that compare short and long answers choose the length with `max_tokens`.
    public var answerTokens: Int?

    public init(firstTokenDelay: Duration = .milliseconds(20), interTokenDelay: Duration = .milliseconds(2), answerTokens: Int? = nil) {
        self.firstTokenDelay = firstTokenDelay
        self.interTokenDelay = interTokenDelay
        self.answerTokens = answerTokens
    }
}

/// Request context that keeps the connection's channel, so faults can cut it.
public struct SimulatorRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The simulated upstream: every provider under its own path prefix, with fault control.
///
/// - `POST /{provider}/v1/chat/completions`: OpenAI Chat Completions, streamed or not.
/// - `POST /{provider}/v1/messages`: Anthropic Messages, streamed or not.
/// - `POST /{provider}/v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
///   (also under `/v1/`): Google Gemini.
/// - `POST /_sim/faults`, `GET /_sim/faults`, `DELETE /_sim/faults`: inject, list, clear faults.
/// - `GET /_sim/stats`, `DELETE /_sim/stats`: request counts per provider, and the W3C
///   `traceparent` of the latest requests that carried one.
public struct Simulator: Sendable {
    public let state: SimulatorState
    public let configuration: SimulatorConfiguration
    let model = SimulatedModel()

    public init(state: SimulatorState = SimulatorState(), configuration: SimulatorConfiguration = .init()) {
        self.state = state
        self.configuration = configuration
    }

    public func buildRouter() -> Router<SimulatorRequestContext> {
        let router = Router(context: SimulatorRequestContext.self)
        router.get("/healthz") { _, _ in "ok" }
        router.post("/_sim/faults") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let decoder = JSONDecoder()
            if let faults = try? decoder.decode([Fault].self, from: body) {
                for fault in faults { await state.add(fault) }
            } else {
                do {
                    await state.add(try decoder.decode(Fault.self, from: body))
                } catch {
                    return Simulator.json(["error": .string("invalid fault: \(error)")], status: .badRequest)
                }
            }
            return Simulator.json(["ok": true, "active": .int(Int64(await state.activeFaults().count))])
        }
        router.get("/_sim/faults") { _, _ -> Response in
            let faults = await state.activeFaults()
            let data = try JSONEncoder().encode(faults)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        router.delete("/_sim/faults") { _, _ -> Response in
            await state.clearFaults()
            return Simulator.json(["ok": true])
        }
        router.get("/_sim/stats") { _, _ -> Response in Simulator.json(await state.stats()) }
        router.delete("/_sim/stats") { _, _ -> Response in
            await state.resetStats()
            return Simulator.json(["ok": true])
        }
        router.post("/:provider/v1/chat/completions") { request, context -> Response in
            try await serve(OpenAIPersonality(), request, context: context)
        }
        router.post("/:provider/v1/messages") { request, context -> Response in
            try await serve(AnthropicPersonality(), request, context: context)
        }
        router.post("/:provider/v1/embeddings") { request, context -> Response in
            try await embeddings(request, context: context) { body, _ in SimulatedEmbeddings.openAIResponse(body) }
        }
        // Gemini: `v1beta` is what the catalog uses; current Google GenAI SDKs call `v1` when given a base URL.
        for version in ["v1beta", "v1"] {
            router.post("/:provider/\(version)/models/:action") { request, context -> Response in
                try await gemini(request, context: context)
            }
        }
        return router
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.bytes(value))))
    }

    /// `…/models/gemini-2.5-flash:streamGenerateContent` (with `?alt=sse`) or `…:generateContent`.
    func gemini(_ request: Request, context: SimulatorRequestContext) async throws -> Response {
        let action = context.parameters.get("action") ?? ""
        guard let colon = action.lastIndex(of: ":") else {
            return Simulator.json(GeminiPersonality().error(status: 404).body, status: .notFound)
        }
        let method = action[action.index(after: colon)...]
        if method == "embedContent" || method == "batchEmbedContents" {
            let model = String(action[..<colon])
            return try await embeddings(request, context: context, model: model) { body, _ in
                SimulatedEmbeddings.geminiResponse(body, model: model, batch: method == "batchEmbedContents")
            }
        }
        guard method == "generateContent" || method == "streamGenerateContent" else {
            return Simulator.json(GeminiPersonality().error(status: 404).body, status: .notFound)
        }
        return try await serve(
            GeminiPersonality(), request, context: context,
            pathModel: String(action[..<colon]), pathStream: method == "streamGenerateContent")
    }

    /// A provider error body with its `error.message` (every format has one) replaced.
    static func replacingMessage(of body: JSONValue, with message: String) -> JSONValue {
        guard case .object(var object) = body, case .object(var error)? = object["error"] else { return body }
        error["message"] = .string(message)
        object["error"] = .object(error)
        return .object(object)
    }

    /// One simulated call in any wire format: apply a matching fault, else answer.
    func serve(
        _ personality: some Personality, _ request: Request, context: SimulatorRequestContext,
        pathModel: String? = nil, pathStream: Bool = false
    ) async throws -> Response {
        let provider = context.parameters.get("provider") ?? "unknown"
        let raw = try await request.body.collect(upTo: 64 << 20)
        guard let body = try? JSONParser.parse(raw.readableBytesView), body.objectValue != nil else {
            let (status, error, _) = personality.error(status: 400)
            return Simulator.json(error, status: .init(code: status))
        }
        if let refusal = personality.refusal(body) { return Simulator.json(refusal, status: .badRequest) }
        var (simulated, stream, includeUsage) = personality.read(body, pathModel: pathModel, pathStream: pathStream)
        if let prefix = simulated.cachePrefix {
            if await state.cache(prefix: prefix.hash) { simulated.cacheRead = prefix.tokens } else { simulated.cacheWrite = prefix.tokens }
        }
        let fault = await state.admit(
            provider: provider, model: simulated.model, traceparent: request.headers[HTTPField.Name("traceparent")!])
        let channel = context.channel
        if fault?.kind == .timeout || fault?.kind == .stall {
            // A client that gives up on a hung answer closes its side; without this the
            // connection would only be half-closed and the hang would outlive the client.
            try? await channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
        }

        switch fault?.kind {
        case .status?:
            let (status, error, headers) = personality.error(status: fault?.status ?? 500)
            var fields: HTTPFields = [:]
            for (name, value) in headers { if let field = HTTPField.Name(name) { fields[field] = value } }
            return Simulator.json(error, status: .init(code: status), headers: fields)
        case .echo?:
            let (status, error, _) = personality.error(status: fault?.status ?? 500)
            let echoed = request.headers.map { "\($0.name.canonicalName): \($0.value)" }.joined(separator: "; ")
            let message =
                "upstream exploded handling the request (headers: \(echoed)); org-Q2xvdWRJbnRlcm5hbA project proj_8fK2mQ9xLr4T; "
                + "shard inference-7.internal:8443 at 10.20.30.40:9000; see https://debug.internal.example/trace/7f3a; "
                + "Traceback (most recent call last): File \"/srv/inference/app/handlers/chat.py\", line 42; "
                + "Incorrect API key provided: sk-proj-****************************abcd"
            return Simulator.json(Self.replacingMessage(of: error, with: message), status: .init(code: status))
        case .contextLength?:
            let promptTokens = SimulatedModel.countTokens(simulated.promptText)
            return Simulator.json(personality.contextLengthError(promptTokens: promptTokens), status: .badRequest)
        case .timeout?:
            try await Simulator.waitUntilClosed(channel)
            return Response(status: .gatewayTimeout)
        case .reset?:
            try? await channel.close()
            return Response(status: .internalServerError)
        case .malformed?:
            let text = stream ? "data: {\"id\": \"broken\", \"choices\": [{\n\n" : "{\"id\": \"broken\", \"choi"
            return Response(
                status: .ok, headers: [.contentType: stream ? "text/event-stream" : "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        case .slow?:
            try await Task.sleep(for: .milliseconds(fault?.delayMs ?? 1000))
        default:
            break
        }

        simulated.answerTokens = configuration.answerTokens
        if fault?.kind == .overshoot { simulated.minimumTokens = (simulated.maxTokens ?? 16) * 2 + 8 }
        var completion = model.complete(simulated)
        if fault?.kind == .usage { completion.usageFactor = max(1, min(fault?.factor ?? 10, 1_000_000)) }
        let id = "sim" + String(SimulatedModel.fnv1a(String(buffer: raw)), radix: 36)
        guard stream else {
            try await Task.sleep(for: configuration.firstTokenDelay)
            return Simulator.json(personality.response(completion, model: simulated.model, id: id))
        }

        let configuration = self.configuration
        let cutAfter: Int? =
            switch fault?.kind {
            case .stall?, .dropAfterChunks?, .streamError?: fault?.afterChunks ?? 2
            default: nil
            }
        let stallForever = fault?.kind == .stall
        let errorEvent = fault?.kind == .streamError ? personality.streamError() : nil
        let events = personality.events(completion, model: simulated.model, id: id, includeUsage: includeUsage)
        return Response(
            status: .ok,
            headers: [.contentType: personality.streamContentType, .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                try await Task.sleep(for: configuration.firstTokenDelay)
                for (index, event) in events.enumerated() {
                    if let cutAfter, index == cutAfter {
                        if let errorEvent {
                            try await writer.write(errorEvent)
                            try await writer.finish(nil)
                            return
                        }
                        if stallForever { try await Simulator.waitUntilClosed(channel) }
                        try? await channel.close()
                        return
                    }
                    if index > 1 && index < events.count - 2 && configuration.interTokenDelay > .zero {
                        try await Task.sleep(for: configuration.interTokenDelay)
                    }
                    try await writer.write(event)
                }
                try await writer.finish(nil)
            })
    }

    /// An embeddings call in either format: the faults that apply to an answer that is not
    /// streamed (a status, a hang, a reset, a malformed or slow answer), else `answer`.
    func embeddings(
        _ request: Request, context: SimulatorRequestContext, model pathModel: String? = nil,
        answer: @Sendable (JSONValue, String) -> (status: HTTPResponse.Status, body: JSONValue)
    ) async throws -> Response {
        let provider = context.parameters.get("provider") ?? "unknown"
        let raw = try await request.body.collect(upTo: 64 << 20)
        guard let body = try? JSONParser.parse(raw.readableBytesView), body.objectValue != nil else {
            return Simulator.json(["error": ["message": "Request body is not JSON (simulated)"]], status: .badRequest)
        }
        let model = pathModel ?? body["model"]?.stringValue ?? ""
        let fault = await state.admit(provider: provider, model: model, traceparent: request.headers[HTTPField.Name("traceparent")!])
        switch fault?.kind {
        case .status?:
            let status = fault?.status ?? 500
            return Simulator.json(
                ["error": ["message": .string("Simulated \(status)"), "code": .int(Int64(status))]], status: .init(code: status))
        case .timeout?, .stall?:
            try? await context.channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
            try await Simulator.waitUntilClosed(context.channel)
            return Response(status: .gatewayTimeout)
        case .reset?, .dropAfterChunks?:
            try? await context.channel.close()
            return Response(status: .internalServerError)
        case .malformed?, .streamError?:
            return Response(
                status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"data\": [")))
        case .slow?:
            try await Task.sleep(for: .milliseconds(fault?.delayMs ?? 1000))
        default:
            break
        }
        let (status, reply) = answer(body, model)
        return Simulator.json(reply, status: status)
    }

    /// Sleeps until the client goes away (or an hour passes): the `timeout` and `stall` faults.
    static func waitUntilClosed(_ channel: any Channel) async throws {
        for _ in 0..<36_000 where channel.isActive {
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
