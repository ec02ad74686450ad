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
        if upstreamID == nil { upstreamID = delta.upstreamID }
        if systemFingerprint == nil { systemFingerprint = delta.systemFingerprint }
        for choice in delta.choices {
            let index = choice["index"]?.intValue ?? 0
            var state = choices[index] ?? Choice()
            if let body = choice["delta"] ?? choice["message"] {
                if let role = body["role"]?.stringValue { state.role = role }
                if let text = body["content"]?.stringValue {
                    state.content += text
                    state.sawContent = true
                }
                if let text = body["reasoning"]?.stringValue { state.reasoning += text }
                if let text = body["refusal"]?.stringValue { state.refusal = (state.refusal ?? "") + text }
                for (position, call) in (body["tool_calls"]?.arrayValue ?? []).enumerated() {
                    let callIndex = call["index"]?.intValue ?? position
                    var tool = state.toolCalls[callIndex] ?? ToolCall()
                    if let id = call["id"]?.stringValue { tool.id = id }
                    if let type = call["type"]?.stringValue { tool.type = type }
                    if let name = call["function"]?["name"]?.stringValue { tool.name += name }
                    if let arguments = call["function"]?["arguments"]?.stringValue { tool.arguments += arguments }
                    state.toolCalls[callIndex] = tool
                }
            }
            if let reason = choice["finish_reason"]?.stringValue { state.finishReason = reason }
            if let reason = choice["native_finish_reason"]?.stringValue { state.nativeFinishReason = reason }
            choices[index] = state
        }
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
