/// One streamed piece of a completion, in OpenAI's chunk vocabulary, whatever the upstream spoke.
public struct CompletionDelta: Sendable, Hashable {
    /// OpenAI `choices[]` entries (`index`, `delta`, `finish_reason`, `native_finish_reason`, `logprobs`).
    public var choices: [JSONValue]
    /// The upstream's own response id (e.g. `chatcmpl-…`), recorded as the generation's `upstream_id`.
    public var upstreamID: String?
    public var systemFingerprint: String?

    public init(choices: [JSONValue], upstreamID: String? = nil, systemFingerprint: String? = nil) {
        self.choices = choices
        self.upstreamID = upstreamID
        self.systemFingerprint = systemFingerprint
    }

    /// The number of output pieces in this delta (content, reasoning or tool-call fragments):
    /// the token count charged when a client abandons a stream before the upstream reported usage.
    public var outputPieces: Int {
        choices.reduce(0) { count, choice in
            guard let delta = choice["delta"] else { return count }
            var pieces = 0
            if let text = delta["content"]?.stringValue, !text.isEmpty { pieces += 1 }
            if let text = delta["reasoning"]?.stringValue, !text.isEmpty { pieces += 1 }
            // A tool call's opening delta (id and name, empty arguments) is framing; its argument
            // fragments are the output.
            for call in delta["tool_calls"]?.arrayValue ?? [] {
                if let arguments = call["function"]?["arguments"]?.stringValue, !arguments.isEmpty { pieces += 1 }
            }
            return count + pieces
        }
    }

    /// The normalized finish reason of the first choice that has one.
    public var finishReason: String? {
        choices.lazy.compactMap { $0["finish_reason"]?.stringValue }.first
    }
}

/// Maps provider finish reasons onto OpenRouter's set: stop, length, tool_calls, content_filter, error.
public enum FinishReason {
    public static func normalize(_ native: String?) -> String? {
        guard let native else { return nil }
        switch native {
        case "stop", "end_turn", "stop_sequence", "STOP", "eos", "complete": return "stop"
        case "length", "max_tokens", "MAX_TOKENS", "model_length": return "length"
        case "tool_calls", "function_call", "tool_use": return "tool_calls"
        case "content_filter", "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "refusal", "LANGUAGE",
            "OTHER", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE":
            return "content_filter"
        case "error": return "error"
        default: return "stop"
        }
    }
}

/// One choice's share of a streamed chunk, as the accumulator takes it: from a decoded
/// `CompletionDelta`, or read straight out of the chunk's bytes.
public struct ChoicePart: Sendable, Hashable {
    public struct ToolCallPart: Sendable, Hashable {
        /// The call's `index` (or its position in the chunk when it has none).
        public var index: Int
        public var id: String?
        public var type: String?
        public var name: String?
        public var arguments: String?

        public init(index: Int, id: String? = nil, type: String? = nil, name: String? = nil, arguments: String? = nil) {
            self.index = index
            self.id = id
            self.type = type
            self.name = name
            self.arguments = arguments
        }
    }

    public var index: Int
    public var role: String?
    public var content: String?
    public var reasoning: String?
    /// OpenRouter's `reasoning_details` entries (signatures, encrypted reasoning), as sent.
    public var reasoningDetails: [JSONValue] = []
    public var refusal: String?
    public var toolCalls: [ToolCallPart] = []
    /// Normalized, and as the upstream said it.
    public var finishReason: String?
    public var nativeFinishReason: String?

    public init(index: Int) { self.index = index }

    /// The parts of an OpenAI `choices[]` entry (`delta` or `message`).
    public init(openAIChoice choice: JSONValue) {
        index = choice["index"]?.intValue ?? 0
        if let body = choice["delta"] ?? choice["message"] {
            role = body["role"]?.stringValue
            content = body["content"]?.stringValue
            reasoning = body["reasoning"]?.stringValue
            reasoningDetails = body["reasoning_details"]?.arrayValue ?? []
            refusal = body["refusal"]?.stringValue
            for (position, call) in (body["tool_calls"]?.arrayValue ?? []).enumerated() {
                toolCalls.append(
                    ToolCallPart(
                        index: call["index"]?.intValue ?? position, id: call["id"]?.stringValue, type: call["type"]?.stringValue,
                        name: call["function"]?["name"]?.stringValue, arguments: call["function"]?["arguments"]?.stringValue))
            }
        }
        finishReason = choice["finish_reason"]?.stringValue
        nativeFinishReason = choice["native_finish_reason"]?.stringValue
    }
}

/// Assembles streamed deltas into the `choices` of a non-streamed `chat.completion`.
///
/// The router always streams from upstreams (so it can measure time to first token, detect
/// stalls and cancel), and builds the non-streamed answer here.
public struct CompletionAccumulator: Sendable {
    struct ToolCall: Sendable {
        var id: String?
        var type: String = "function"
        var name: String = ""
        var arguments: String = ""
    }

    struct Choice: Sendable {
        var role: String = "assistant"
        var content: String = ""
        var sawContent = false
        var reasoning: String = ""
        /// `reasoning_details` by their `index`, merged as they stream.
        var reasoningDetails: [Int: JSONObject] = [:]
        var refusal: String?
        var toolCalls: [Int: ToolCall] = [:]
        var finishReason: String?
        var nativeFinishReason: String?
    }

    private var choices: [Int: Choice] = [:]
    public private(set) var upstreamID: String?
    public private(set) var systemFingerprint: String?

    public init() {}

    public mutating func add(_ delta: CompletionDelta) {
        noteIdentity(upstreamID: delta.upstreamID, systemFingerprint: delta.systemFingerprint)
        for choice in delta.choices { add(ChoicePart(openAIChoice: choice)) }
    }

    /// The upstream's response id and fingerprint; the first ones seen stay.
    public mutating func noteIdentity(upstreamID: String?, systemFingerprint: String?) {
        if self.upstreamID == nil { self.upstreamID = upstreamID }
        if self.systemFingerprint == nil { self.systemFingerprint = systemFingerprint }
    }

    /// One choice's share of a chunk. The choice is changed in place: a copy taken out and put
    /// back shared its text with the dictionary, so every append copied the whole answer so far.
    public mutating func add(_ part: ChoicePart) {
        Self.apply(part, to: &choices[part.index, default: Choice()])
    }

    private static func apply(_ part: ChoicePart, to state: inout Choice) {
        if let role = part.role { state.role = role }
        if let text = part.content {
            state.content += text
            state.sawContent = true
        }
        if let text = part.reasoning { state.reasoning += text }
        for detail in part.reasoningDetails { merge(detail, into: &state.reasoningDetails) }
        if let text = part.refusal { state.refusal = (state.refusal ?? "") + text }
        for call in part.toolCalls { apply(call, to: &state.toolCalls[call.index, default: ToolCall()]) }
        if let reason = part.finishReason { state.finishReason = reason }
        if let reason = part.nativeFinishReason { state.nativeFinishReason = reason }
    }

    /// Streamed pieces of one detail share its `index`: texts are joined, the rest (a signature,
    /// encrypted data) is taken as sent.
    private static func merge(_ detail: JSONValue, into details: inout [Int: JSONObject]) {
        guard let fields = detail.objectValue else { return }
        let index = detail["index"]?.intValue ?? 0
        var entry = details[index] ?? JSONObject()
        for (key, value) in fields {
            if key == "text", let text = value.stringValue {
                entry["text"] = .string((entry["text"]?.stringValue ?? "") + text)
            } else {
                entry[key] = value
            }
        }
        details[index] = entry
    }

    private static func apply(_ call: ChoicePart.ToolCallPart, to tool: inout ToolCall) {
        if let id = call.id { tool.id = id }
        if let type = call.type { tool.type = type }
        if let name = call.name { tool.name += name }
        if let arguments = call.arguments { tool.arguments += arguments }
    }

    /// The `choices` array of the assembled completion.
    public func completedChoices() -> [JSONValue] {
        let indexes = choices.keys.sorted()
        let all = indexes.isEmpty ? [0] : indexes
        return all.map { index in
            let state = choices[index] ?? Choice()
            var message: JSONObject = ["role": .string(state.role)]
            message["content"] = state.sawContent || state.toolCalls.isEmpty ? .string(state.content) : .null
            message["refusal"] = state.refusal.map { .string($0) } ?? .null
            message["reasoning"] = state.reasoning.isEmpty ? .null : .string(state.reasoning)
            if !state.reasoningDetails.isEmpty {
                message["reasoning_details"] = .array(state.reasoningDetails.keys.sorted().map { .object(state.reasoningDetails[$0]!) })
            }
            if !state.toolCalls.isEmpty {
                message["tool_calls"] = .array(
                    state.toolCalls.keys.sorted().map { key in
                        let call = state.toolCalls[key]!
                        return [
                            "id": .string(call.id ?? "call_\(index)_\(key)"), "type": .string(call.type),
                            "function": ["name": .string(call.name), "arguments": .string(call.arguments)],
                        ]
                    })
            }
            return [
                "index": .int(Int64(index)), "logprobs": .null,
                "finish_reason": state.finishReason.map { .string($0) } ?? .null,
                "native_finish_reason": (state.nativeFinishReason ?? state.finishReason).map { .string($0) } ?? .null,
                "message": .object(message),
            ]
        }
    }

    /// The finish reason of the first choice.
    public var finishReason: String? { choices[choices.keys.min() ?? 0]?.finishReason }
}
