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

/// Puts a chat stream's tool calls one after another, as surfaces whose calls are blocks
/// (Anthropic) or items (Responses) need them: a call streams while no other call is open; one
/// whose fragments arrive while another is open (parallel calls interleaved upstream) is held
/// and comes out whole at the end. A pure state machine: the translators write what it says.
struct ToolCallSequencer {
    struct Call {
        var id: String?
        var name = ""
        /// Arguments not yet written.
        var arguments = ""
        var started = false
    }

    enum Step {
        /// Open the call's block or item, with the arguments held so far.
        case start(index: Int, id: String?, name: String, arguments: String)
        /// More arguments of the open call.
        case arguments(String)
        /// Nothing to write yet.
        case hold
    }

    private var calls: [Int: Call] = [:]

    /// What to write for one chat `tool_calls` entry, given which call (its index) is open.
    mutating func take(_ entry: JSONValue, openCall: Int?) -> Step {
        let index = entry["index"]?.intValue ?? 0
        var call = calls[index] ?? Call()
        if let id = entry["id"]?.stringValue { call.id = id }
        // Most providers send the name once; some repeat it whole in every chunk.
        if let name = entry["function"]?["name"]?.stringValue, !name.isEmpty, name != call.name { call.name += name }
        let fragment = entry["function"]?["arguments"]?.stringValue ?? ""
        defer { calls[index] = call }
        if openCall == index { return fragment.isEmpty ? .hold : .arguments(fragment) }
        guard !call.started, openCall == nil else {
            call.arguments += fragment
            return .hold
        }
        call.started = true
        let arguments = call.arguments + fragment
        call.arguments = ""
        return .start(index: index, id: call.id, name: call.name, arguments: arguments)
    }

    /// The calls still held at the end of the answer, in order, each to be written whole.
    mutating func held() -> [(index: Int, call: Call)] {
        let waiting = calls.keys.sorted().filter { !(calls[$0]?.started ?? true) }
        for index in waiting { calls[index]?.started = true }
        return waiting.compactMap { index in calls[index].map { (index, $0) } }
    }
}
