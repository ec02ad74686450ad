import Foundation
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

    public init(firstTokenDelay: Duration = .milliseconds(20), interTokenDelay: Duration = .milliseconds(2)) {
        self.firstTokenDelay = firstTokenDelay
        self.interTokenDelay = interTokenDelay
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
/// - `POST /_sim/faults`, `GET /_sim/faults`, `DELETE /_sim/faults`: inject, list, clear faults.
/// - `GET /_sim/stats`, `DELETE /_sim/stats`: request counts per provider.
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
            try await chatCompletions(request, context: context)
        }
        return router
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.bytes(value))))
    }

    /// The error body a real OpenAI-compatible provider sends for `status`.
    static func openAIError(status: Int) -> JSONValue {
        let (type, code, message): (String, String, String) = switch status {
        case 400: ("invalid_request_error", "invalid_request", "Invalid request (simulated)")
        case 401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)")
        case 403: ("permission_error", "forbidden", "Forbidden (simulated)")
        case 404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)")
        case 429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests (simulated)")
        case 503: ("service_unavailable_error", "server_is_overloaded", "The server is overloaded (simulated)")
        default: ("server_error", "server_error", "The server had an error while processing your request (simulated)")
        }
        return ["error": ["message": .string(message), "type": .string(type), "param": nil, "code": .string(code)]]
    }

    func chatCompletions(_ request: Request, context: SimulatorRequestContext) async throws -> Response {
        let provider = context.parameters.get("provider") ?? "unknown"
        let raw = try await request.body.collect(upTo: 64 << 20)
        guard let body = try? JSONDecoder().decode(JSONValue.self, from: raw), body.objectValue != nil else {
            return Simulator.json(
                ["error": ["message": "We could not parse the JSON body of your request.", "type": "invalid_request_error",
                           "param": nil, "code": nil]], status: .badRequest)
        }
        let modelName = body["model"]?.stringValue ?? ""
        let stream = body["stream"]?.boolValue ?? false
        let includeUsage = body["stream_options"]?["include_usage"]?.boolValue ?? false
        let fault = await state.admit(provider: provider, model: modelName)
        let channel = context.channel
        if fault?.kind == .timeout || fault?.kind == .stall {
            // A client that gives up on a hung answer closes its side; without this the
            // connection would only be half-closed and the hang would outlive the client.
            try? await channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
        }

        switch fault?.kind {
        case .status?:
            let status = fault?.status ?? 500
            var headers: HTTPFields = [:]
            if status == 429 || status == 503 { headers[.retryAfter] = "1" }
            return Simulator.json(Simulator.openAIError(status: status), status: .init(code: status), headers: headers)
        case .timeout?:
            try await Simulator.waitUntilClosed(channel)
            return Response(status: .gatewayTimeout)
        case .reset?:
            try? await channel.close()
            return Response(status: .internalServerError)
        case .malformed?:
            let text = stream ? "data: {\"id\": \"chatcmpl-broken\", \"choices\": [{\n\n" : "{\"id\": \"chatcmpl-broken\", \"choi"
            return Response(
                status: .ok, headers: [.contentType: stream ? "text/event-stream" : "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: text)))
        case .slow?:
            try await Task.sleep(for: .milliseconds(fault?.delayMs ?? 1000))
        default:
            break
        }

        let completion = model.complete(body)
        let id = "chatcmpl-sim\(String(SimulatedModel.fnv1a(raw.getString(at: raw.readerIndex, length: raw.readableBytes) ?? ""), radix: 36))"
        let created = Int64(Date().timeIntervalSince1970)
        let usage: JSONValue = [
            "prompt_tokens": .int(Int64(completion.promptTokens)), "completion_tokens": .int(Int64(completion.tokens.count)),
            "total_tokens": .int(Int64(completion.promptTokens + completion.tokens.count)),
            "prompt_tokens_details": ["cached_tokens": 0], "completion_tokens_details": ["reasoning_tokens": 0],
        ]

        guard stream else {
            try await Task.sleep(for: configuration.firstTokenDelay)
            return Simulator.json([
                "id": .string(id), "object": "chat.completion", "created": .int(created), "model": .string(modelName),
                "system_fingerprint": "fp_sim",
                "choices": [["index": 0, "message": ["role": "assistant", "content": .string(completion.text), "refusal": nil],
                             "logprobs": nil, "finish_reason": .string(completion.finishReason)]],
                "usage": usage,
            ])
        }

        let configuration = self.configuration
        let cutAfter: Int? = switch fault?.kind {
        case .stall?, .dropAfterChunks?: fault?.afterChunks ?? 2
        default: nil
        }
        let stallForever = fault?.kind == .stall
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                func chunk(_ delta: JSONValue, finish: String? = nil) -> ByteBuffer {
                    var bytes = Array("data: ".utf8)
                    JSONWriter.write([
                        "id": .string(id), "object": "chat.completion.chunk", "created": .int(created),
                        "model": .string(modelName), "system_fingerprint": "fp_sim",
                        "choices": [["index": 0, "delta": delta, "logprobs": nil,
                                     "finish_reason": finish.map { .string($0) } ?? nil]],
                    ], into: &bytes)
                    bytes.append(contentsOf: "\n\n".utf8)
                    return ByteBuffer(bytes: bytes)
                }
                var pieces: [ByteBuffer] = [chunk(["role": "assistant", "content": ""])]
                pieces += completion.tokens.map { chunk(["content": .string($0)]) }
                pieces.append(chunk([:], finish: completion.finishReason))
                if includeUsage {
                    var bytes = Array("data: ".utf8)
                    JSONWriter.write([
                        "id": .string(id), "object": "chat.completion.chunk", "created": .int(created),
                        "model": .string(modelName), "choices": [], "usage": usage,
                    ], into: &bytes)
                    bytes.append(contentsOf: "\n\n".utf8)
                    pieces.append(ByteBuffer(bytes: bytes))
                }
                pieces.append(ByteBuffer(string: "data: [DONE]\n\n"))

                try await Task.sleep(for: configuration.firstTokenDelay)
                for (index, piece) in pieces.enumerated() {
                    if let cutAfter, index == cutAfter {
                        if stallForever { try await Simulator.waitUntilClosed(channel) }
                        try? await channel.close()
                        return
                    }
                    if index > 1 && index < pieces.count - 2 && configuration.interTokenDelay > .zero {
                        try await Task.sleep(for: configuration.interTokenDelay)
                    }
                    try await writer.write(piece)
                }
                try await writer.finish(nil)
            })
    }

    /// Sleeps until the client goes away (or an hour passes): the `timeout` and `stall` faults.
    static func waitUntilClosed(_ channel: any Channel) async throws {
        for _ in 0..<36_000 where channel.isActive {
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
