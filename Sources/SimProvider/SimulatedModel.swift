import Foundation
import SignalboxCore

/// What the simulated model needs from a request, whatever wire format it came in.
public struct SimulatedRequest: Sendable {
    public var model: String
    /// Every message's text, joined: the seed of the answer and the prompt token count.
    public var promptText: String
    public var messageCount: Int
    public var maxTokens: Int?
    /// Declared tools: name and JSON schema of the arguments.
    public var tools: [(name: String, schema: JSONValue)]
    /// The tool the request forces the model to call (`required` → the first tool).
    public var forcedTool: String?
    /// JSON output was requested (natively, or through a forced tool standing in for it).
    public var wantsJSON: Bool
    public var jsonSchema: JSONValue?
    /// Thinking was asked for (a budget, an effort); the model then reasons before answering.
    public var reasons: Bool
    /// Whether the reasoning text is returned (Gemini counts thoughts it does not return).
    public var showsReasoning = true
    /// The cacheable prompt prefix (explicit `cache_control` breakpoints, or a long prompt's
    /// history for providers that cache automatically): its hash and token count.
    public var cachePrefix: (hash: UInt64, tokens: Int)?
    /// Set by the simulator once it knows whether the prefix was seen before.
    public var cacheRead = 0
    public var cacheWrite = 0
    /// Completions asked for (`n`); each is a different answer.
    public var choices = 1
    /// The `overshoot` fault: the text answer is at least this long, whatever `max_tokens` says.
    public var minimumTokens: Int?
    /// A fixed answer length instead of the one the prompt picks (`SimulatorConfiguration.answerTokens`).
    public var answerTokens: Int?

    public init(
        model: String, promptText: String, messageCount: Int, maxTokens: Int? = nil,
        tools: [(name: String, schema: JSONValue)] = [], forcedTool: String? = nil,
        wantsJSON: Bool = false, jsonSchema: JSONValue? = nil, reasons: Bool = false
    ) {
        self.reasons = reasons
        self.model = model
        self.promptText = promptText
        self.messageCount = messageCount
        self.maxTokens = maxTokens
        self.tools = tools
        self.forcedTool = forcedTool
        self.wantsJSON = wantsJSON
        self.jsonSchema = jsonSchema
    }

    /// Text of an OpenAI/Anthropic-style content value (a string or parts/blocks with `text`).
    static func text(of content: JSONValue?) -> String {
        switch content {
        case .string(let text)?: return text
        case .array(let parts)?: return parts.map { $0["text"]?.stringValue ?? "[media]" }.joined()
        default: return ""
        }
    }
}

/// The simulated model: a deterministic function from a request to a completion.
///
/// The same request always yields the same words and token counts, so tests can assert on
/// what a client receives; different requests yield different answers.
public struct SimulatedModel: Sendable {
    static let vocabulary: [String] = [
        "the", "router", "signal", "box", "routes", "each", "request", "to", "a", "provider", "that", "answers",
        "quickly", "and", "bills", "only", "what", "succeeded", "while", "tokens", "stream", "through", "every",
        "node", "in", "its", "region", "with", "care", "for", "credits", "ledger", "entries", "stay", "exact",
        "so", "nobody", "pays", "twice", "gossip", "spreads", "health", "across", "clusters", "when", "upstreams",
        "fail", "over", "gracefully", "models", "reply", "here", "is", "an", "answer", "from", "simulated",
        "world", "hello", "friend", "today", "again", "soon", "now",
    ]

    public struct ToolCall: Sendable, Hashable {
        public var id: String
        public var name: String
        /// The arguments as a JSON object text that satisfies the tool's schema.
        public var arguments: String
    }

    public struct Completion: Sendable, Hashable {
        /// Output pieces; each is one completion token.
        public var tokens: [String]
        /// Reasoning pieces, produced before the answer when thinking was asked for.
        public var reasoning: [String] = []
        public var showsReasoning = true
        /// Prompt tokens read from, and written to, the simulated prompt cache.
        public var cacheRead = 0
        public var cacheWrite = 0
        public var toolCall: ToolCall?
        public var promptTokens: Int
        /// `stop`, `length` when `max_tokens` cut the answer short, or `tool_calls`.
        public var finishReason: String
        /// The further answers when `n` > 1 (choices 1, 2, …).
        public var alternatives: [Completion] = []
        /// The `usage` fault: token counts are reported this many times too large.
        public var usageFactor = 1
        public var text: String { tokens.joined() }
        /// Completion tokens of this choice: the answer, the tool call's arguments and the reasoning.
        var ownCompletionTokens: Int {
            tokens.count + reasoning.count + (toolCall.map { SimulatedModel.countTokens($0.arguments) } ?? 0)
        }
        /// Completion tokens as reported: every choice's, times the usage fault's factor.
        public var completionTokens: Int {
            (ownCompletionTokens + alternatives.reduce(0) { $0 + $1.ownCompletionTokens }) * usageFactor
        }
        /// Prompt tokens as reported (times the usage fault's factor).
        public var reportedPromptTokens: Int { promptTokens * usageFactor }
    }

    public init() {}

    public func complete(_ request: SimulatedRequest) -> Completion {
        var completion = choice(request)
        if request.choices > 1 {
            completion.alternatives = (1..<request.choices).map { index in
                var other = request
                other.promptText += "\u{0}choice \(index)"
                return choice(other)
            }
        }
        return completion
    }

    func choice(_ request: SimulatedRequest) -> Completion {
        var completion = answer(request)
        completion.cacheRead = min(request.cacheRead, completion.promptTokens)
        completion.cacheWrite = min(request.cacheWrite, completion.promptTokens - completion.cacheRead)
        if request.reasons {
            let seed = SimulatedModel.fnv1a("reasoning\u{0}" + request.promptText)
            completion.showsReasoning = request.showsReasoning
            completion.reasoning =
                ["Let", " me", " think", ":"]
                + words(seed: seed, count: 6 + Int(seed % 6)).map { " " + $0.lowercased().trimmingCharacters(in: .whitespaces) } + ["."]
        }
        return completion
    }

    func answer(_ request: SimulatedRequest) -> Completion {
        let seed = SimulatedModel.fnv1a(request.model + "\u{0}" + request.promptText)
        let promptTokens = SimulatedModel.countTokens(request.promptText) + 3 * request.messageCount + 3
        if let forced = request.forcedTool, let tool = request.tools.first(where: { $0.name == forced }) ?? request.tools.first {
            var arguments = JSONWriter.string(SchemaExample.value(for: tool.schema, seed: seed))
            var finish = "tool_calls"
            // `max_tokens` cuts the arguments short, as providers do (the JSON is then incomplete).
            if let limit = request.maxTokens, request.minimumTokens == nil, SimulatedModel.countTokens(arguments) > limit {
                arguments = String(decoding: arguments.utf8.prefix(max(0, limit * 4 - 3)), as: UTF8.self)
                while SimulatedModel.countTokens(arguments) > limit { arguments.removeLast() }
                finish = "length"
            }
            return Completion(
                tokens: [], toolCall: ToolCall(id: "call_sim\(String(seed % 1_000_000, radix: 36))", name: tool.name, arguments: arguments),
                promptTokens: promptTokens, finishReason: finish)
        }
        if request.wantsJSON {
            let value =
                request.jsonSchema.map { SchemaExample.value(for: $0, seed: seed) }
                ?? ["answer": .string(words(seed: seed, count: 6).joined()), "ok": true]
            let text = JSONWriter.string(value)
            let tokens = TokenPieces.split(text)
            if let limit = request.maxTokens, request.minimumTokens == nil, tokens.count > limit {
                return Completion(tokens: Array(tokens.prefix(limit)), toolCall: nil, promptTokens: promptTokens, finishReason: "length")
            }
            return Completion(tokens: tokens, toolCall: nil, promptTokens: promptTokens, finishReason: "stop")
        }
        let natural = max(request.answerTokens ?? (8 + Int(seed % 24)), request.minimumTokens ?? 0)
        let count = request.minimumTokens != nil ? natural : min(natural, request.maxTokens ?? natural)
        var tokens = words(seed: seed, count: count)
        if count == natural, !tokens.isEmpty { tokens[tokens.count - 1] += "." }
        return Completion(
            tokens: tokens, toolCall: nil, promptTokens: promptTokens,
            finishReason: count < natural ? "length" : "stop")
    }

    func words(seed: UInt64, count: Int) -> [String] {
        var generator = seed
        var tokens: [String] = []
        for index in 0..<count {
            generator = generator &* 6364136223846793005 &+ 1442695040888963407
            let word = SimulatedModel.vocabulary[Int((generator >> 33) % UInt64(SimulatedModel.vocabulary.count))]
            tokens.append(index == 0 ? word.prefix(1).uppercased() + word.dropFirst() : " " + word)
        }
        return tokens
    }

    /// Automatic prompt caching (OpenAI, Gemini): prompts of 1,024 tokens or more cache their
    /// history (all but the last message) in 128-token steps.
    static func automaticCachePrefix(history: String, promptTokens: Int) -> (hash: UInt64, tokens: Int)? {
        let tokens = countTokens(history) / 128 * 128
        guard promptTokens >= 1024, tokens >= 1024 else { return nil }
        return (fnv1a("cache\u{0}" + history), tokens)
    }

    /// A tokenizer stand-in: about one token per four bytes, at least one per word.
    static func countTokens(_ text: String) -> Int {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).count
        return max(words, (text.utf8.count + 3) / 4)
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}

/// Builds a JSON value that satisfies a JSON schema (the common subset: types, enums, required
/// properties, arrays), so simulated tool calls and JSON answers validate.
enum SchemaExample {
    static func value(for schema: JSONValue, seed: UInt64, depth: Int = 0) -> JSONValue {
        if let values = schema["enum"]?.arrayValue, let first = values.first { return first }
        if let constant = schema["const"] { return constant }
        if depth > 6 { return .null }
        if let options = (schema["anyOf"] ?? schema["oneOf"])?.arrayValue, let first = options.first {
            return value(for: first, seed: seed, depth: depth + 1)
        }
        var type = schema["type"]?.stringValue
        if type == nil, let types = schema["type"]?.arrayValue { type = types.compactMap(\.stringValue).first { $0 != "null" } }
        if type == nil && schema["properties"] != nil { type = "object" }
        switch type {
        case "object":
            var object = JSONObject()
            let properties = schema["properties"]?.objectValue ?? JSONObject()
            for entry in properties {
                object[entry.key] = value(for: entry.value, seed: seed &+ UInt64(entry.key.utf8.count), depth: depth + 1)
            }
            return .object(object)
        case "array":
            let minimum = max(schema["minItems"]?.intValue ?? 1, 1)
            let item = schema["items"] ?? ["type": "string"]
            return .array((0..<minimum).map { _ in value(for: item, seed: seed, depth: depth + 1) })
        case "integer": return .int(Int64(max(schema["minimum"]?.intValue ?? 1, 1)))
        case "number": return .int(Int64(max(schema["minimum"]?.intValue ?? 1, 1)))
        case "boolean": return .bool(seed % 2 == 0)
        case "null": return .null
        default:
            let word = SimulatedModel.vocabulary[Int(seed % UInt64(SimulatedModel.vocabulary.count))]
            return .string(schema["format"]?.stringValue == "date" ? "2026-01-01" : word)
        }
    }
}
