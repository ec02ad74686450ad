import HTTPTypes
import Hummingbird
import NIOCore
import Providers
import SignalboxCore

/// A client-facing API that runs on the chat pipeline: chat completions itself, legacy
/// completions, and the other fronts. Its request becomes a `ChatRequest`, and the pipeline's
/// OpenAI chat answer — a `chat.completion`, or a stream of chunks — becomes the surface's own
/// response. Routing, every `provider` preference, failover, reservations, settlement,
/// `Idempotency-Key`, `X-Generation-Id` and key limits apply unchanged, because they only ever
/// see the chat request.
protocol ChatSurface: Sendable {
    /// Reads the client's body. An `InvalidRequest` is a 400 in the surface's error shape, an
    /// `APIError` its own status.
    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest
    /// The non-streamed answer, from the pipeline's `chat.completion`.
    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue
    /// A translator for one streamed answer (the generation's id and the model asked for);
    /// nil when the chat stream is the answer.
    func makeStream(generationID: String, model: String) -> (any SurfaceStream)?
    /// An error as this surface's clients expect it.
    func errorResponse(_ error: APIError) -> Response
    /// Whether a stream's response head waits for its first event, so a request that fails
    /// before any output is an HTTP error (see `RouterAPI.heldStreamResponse`).
    var holdsStreamHead: Bool { get }
}

extension ChatSurface {
    var holdsStreamHead: Bool { false }
}

/// Turns one streamed chat answer — OpenAI `chat.completion.chunk` events, the closing usage
/// chunk (or error chunk) and `[DONE]`, exactly as a chat client gets them — into a surface's events.
protocol SurfaceStream: Sendable {
    /// Sent at once, before anything runs (so before any failover).
    var opening: ByteBuffer { get }
    /// Sent every few seconds while waiting for the first token.
    var keepAlive: ByteBuffer { get }
    /// The surface's events for whole chat SSE events (possibly several, possibly none).
    mutating func translate(_ chatEvents: ByteBuffer) -> ByteBuffer
}

extension ChatSurface {
    /// A front's body as a JSON object, numbers kept as written (`1e-07` stays `1e-07`, `1e400`
    /// stays out of range), so the chat request checks them as the chat route would.
    static func object(_ body: ByteBuffer) throws(InvalidRequest) -> JSONObject {
        let json = body.withUnsafeReadableBytes { try? JSONParser.parseExact($0) }
        guard let json else { throw InvalidRequest("Request body is not valid JSON") }
        guard let object = json.objectValue else { throw InvalidRequest("Request body must be a JSON object") }
        return object
    }
}

/// `POST /api/v1/chat/completions`: the pipeline's own language.
struct ChatCompletionsSurface: ChatSurface {
    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest {
        try ChatRequest(bytes: Array(body.readableBytesView))
    }

    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue { completion }

    func makeStream(generationID: String, model: String) -> (any SurfaceStream)? { nil }

    func errorResponse(_ error: APIError) -> Response { error.jsonResponse() }
}

extension SurfaceStream {
    var opening: ByteBuffer { keepAlive }

    /// Each chat event in `bytes`, parsed: `nil` for `[DONE]`. Events that are not JSON (none
    /// are sent) are skipped.
    static func chatEvents(_ bytes: ByteBuffer) -> [JSONValue?] {
        var parser = SSEParser()
        var events = (try? parser.feed(bytes)) ?? []
        if let last = parser.finish() { events.append(last) }
        return events.compactMap { event -> JSONValue?? in
            if event.data == "[DONE]" { return .some(nil) }
            guard let value = try? JSONParser.parse(event.data) else { return .none }
            return .some(value)
        }
    }
}
