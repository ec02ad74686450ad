import NIOCore
import SignalboxCore

/// Why an upstream attempt failed, and whether another endpoint may be tried.
public struct UpstreamFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// Could not connect (refused, DNS, TLS, connect timeout).
        case connect
        /// No response head or first token within the first-token timeout.
        case firstTokenTimeout
        /// The stream went silent for longer than the stall timeout.
        case stall
        /// The upstream answered with a non-2xx status.
        case status(Int)
        /// The body was not the wire format it should be.
        case malformed
        /// The connection closed before the stream ended.
        case disconnected
        /// The upstream sent an error event inside a 200 stream.
        case streamError
    }

    public var kind: Kind
    /// What went wrong, as clients may see it (`ErrorTextRedaction.forClients`).
    public var message: String
    /// The upstream's own error text (body or event) for `metadata.raw`, redacted the same way.
    public var raw: String?
    /// The upstream's error text with only credentials redacted, for the node's debug log.
    public var operatorDetail: String?
    /// Seconds the upstream asked us to wait, when it said.
    public var retryAfter: Int?

    /// The request certainly never reached the upstream (no connection was made), so another
    /// target may take it without risk of running it twice. Set by the transport.
    public var neverReachedUpstream: Bool

    public init(_ kind: Kind, _ message: String, raw: String? = nil, retryAfter: Int? = nil, neverReachedUpstream: Bool = false) {
        self.kind = kind
        // Whatever an upstream wrote is redacted here, once, before it can reach a client or the ledger.
        self.message = ErrorTextRedaction.forClients(message)
        self.raw = raw.map(ErrorTextRedaction.forClients)
        operatorDetail = raw.map { ErrorTextRedaction.forOperators(String($0.prefix(16_384))) }
        self.retryAfter = retryAfter
        self.neverReachedUpstream = neverReachedUpstream
    }

    /// Failures worth another endpoint: transport trouble, timeouts, rate limits, server errors,
    /// and auth errors (our provider key's fault, not the client's). A plain 400 is the
    /// client's request and would fail anywhere.
    public var isRetryable: Bool {
        switch kind {
        case .connect, .firstTokenTimeout, .stall, .malformed, .disconnected, .streamError: return true
        case .status(let code):
            return code == 401 || code == 402 || code == 403 || code == 404 || code == 408 || code == 409
                || code == 429 || code >= 500
        }
    }

    public var isRateLimit: Bool { kind == .status(429) }

    /// The prompt did not fit the model's context: only a model with a larger one can help.
    public var isContextLengthError: Bool {
        guard case .status(let code) = kind, code == 400 || code == 413 else { return false }
        let text = (message + " " + (raw ?? "")).lowercased()
        return [
            "context_length_exceeded", "maximum context length", "context length", "prompt is too long",
            "exceeds the maximum number of tokens", "input token count",
        ].contains { text.contains($0) }
    }

    /// The HTTP status the client sees when this is the last failure: upstream 400s pass
    /// through, rate limits stay 429, timeouts are 408... everything else is a bad gateway.
    public var clientStatus: Int {
        switch kind {
        case .status(let code) where code == 400 || code == 413 || code == 422 || code == 429: return code
        default: return 502
        }
    }

    /// A short status for attempt logs: the HTTP code or the failure kind.
    public var code: String {
        switch kind {
        case .connect: return "connect_error"
        case .firstTokenTimeout: return "first_token_timeout"
        case .stall: return "stall_timeout"
        case .status(let code): return String(code)
        case .malformed: return "malformed_response"
        case .disconnected: return "disconnected"
        case .streamError: return "stream_error"
        }
    }

    public var description: String { "\(code): \(message)" }
}

/// What an adapter reads out of the upstream stream.
public enum AdapterEvent: Sendable {
    case delta(CompletionDelta)
    case usage(TokenUsage)
    /// The upstream said the stream is complete.
    case done
}

/// Turns upstream stream events into OpenAI-shaped deltas. One per upstream call.
public protocol StreamDecoder: Sendable {
    mutating func decode(_ event: SSEEvent) throws(UpstreamFailure) -> [AdapterEvent]
}

/// Translates between the router's OpenAI-style requests and one upstream wire format.
///
/// The router always asks upstreams to stream; non-streamed answers are assembled from the
/// deltas (`CompletionAccumulator`), so every format needs only one response path.
public protocol ProviderAdapter: Sendable {
    associatedtype Decoder: StreamDecoder
    /// The streaming upstream request for `request` at `attempt`'s endpoint.
    func makeRequest(_ request: ChatRequest, attempt: PlannedAttempt, apiKey: String?) -> UpstreamRequest
    /// A decoder for the stream answering `request` (some translations depend on the request).
    func makeDecoder(for request: ChatRequest) -> Decoder
    /// Reads an error response (status ≥ 300) into a failure.
    func failure(status: Int, body: ByteBuffer, retryAfter: Int?) -> UpstreamFailure
}

/// The adapter for each wire format: the one place a provider's format picks its translation.
public enum ProviderAdapters {
    public static func adapter(for format: WireFormat) -> any ProviderAdapter {
        switch format {
        case .openai: OpenAIAdapter()
        case .anthropic: AnthropicAdapter()
        case .gemini: GeminiAdapter()
        }
    }
}

extension ProviderAdapter {
    /// `path` under the provider's base URL (which may or may not end in a slash).
    func url(_ attempt: PlannedAttempt, _ path: String) -> String {
        let base = attempt.provider.baseURL
        return (base.hasSuffix("/") ? String(base.dropLast()) : base) + path
    }

    /// Drops parameters the endpoint does not support (OpenRouter's default; with
    /// `require_parameters` such endpoints are not planned at all).
    func unsupportedParameters(_ request: ChatRequest, _ endpoint: ModelEndpoint) -> [String] {
        guard !endpoint.supportedParameters.isEmpty else { return [] }
        return request.usedParameters.filter { parameter in
            !endpoint.supportedParameters.contains(parameter)
                && !(parameter == "tool_choice" && endpoint.supportedParameters.contains("tools"))
        }
    }
}

/// OpenAI tool-call arguments are a JSON string; Anthropic and Gemini want an object.
enum ToolArguments {
    /// The arguments as a JSON object; `{}` when they are empty or not an object.
    static func object(_ arguments: String?) -> JSONValue {
        guard let arguments, let parsed = try? JSONParser.parse(arguments), parsed.objectValue != nil else { return [:] }
        return parsed
    }
}

/// A conversation as strictly alternating turns: items appended under the role of the last turn
/// join it. Anthropic and Gemini both reject two consecutive turns of one role.
struct AlternatingTurns {
    var turns: [(role: String, items: [JSONValue])] = []

    mutating func append(_ role: String, _ items: [JSONValue]) {
        guard !items.isEmpty else { return }
        if let last = turns.last, last.role == role {
            turns[turns.count - 1].items += items
        } else {
            turns.append((role, items))
        }
    }
}
