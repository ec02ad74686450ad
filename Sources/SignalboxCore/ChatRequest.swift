/// The parts of a chat completion request that routing and billing need, read from the
/// client's JSON body. The body itself travels on as `body`.
public struct ChatRequest: Sendable {
    /// The whole request body as the client sent it.
    public var body: JSONObject
    /// Models to try in order: `model` first, then each of `models`.
    public var models: [String]
    public var stream: Bool
    /// `max_completion_tokens` or `max_tokens`, when given.
    public var maxTokens: Int?
    public var provider: ProviderPreferences
    /// An upper bound on the prompt's text tokens (one per UTF-8 byte plus per-message
    /// allowances), for reservations; media parts are counted in `prompt`.
    public var promptTokenEstimate: Int { prompt.textTokens }
    /// What bounds the prompt's size, whatever the endpoint (see `PlannedAttempt.promptTokenBound`).
    public var prompt: PromptBound
    /// Completions asked for (`n`): each may be `maxTokens` long, so reservations multiply by it.
    public var choices: Int
    /// Request parameters that some endpoints may not support (`tools`, `response_format`, …).
    public var usedParameters: [String]
    /// What the client asked of the model's reasoning, from `reasoning`, `reasoning_effort` or
    /// `include_reasoning`; nil when it asked nothing.
    public var reasoning: ReasoningRequest?

    /// Fields that exist only between the client and the router; never sent upstream.
    public static let routerOnlyFields: Set<String> = [
        "models", "route", "provider", "transforms", "plugins", "usage", "debug", "session_id",
    ]

    /// Parameters whose support differs between endpoints (see `ModelEndpoint.supportedParameters`).
    static let routableParameters: [String] = [
        "tools", "tool_choice", "response_format", "temperature", "top_p", "top_k", "stop", "seed",
        "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "reasoning",
    ]

    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool", "function"]

    /// Validates and reads a request body. Throws an `InvalidRequest` that names the field and says what is wrong.
    public init(json: JSONValue) throws(InvalidRequest) {
        guard case .object(let body) = json else {
            throw InvalidRequest("Request body must be a JSON object")
        }
        self.body = body

        var models: [String] = []
        switch body["model"] {
        case .string(let model)? where !model.isEmpty: models.append(model)
        case nil, .null?: break
        default: throw InvalidRequest("'model' must be a non-empty string")
        }
        if let list = body["models"], !list.isNull {
            guard let array = list.arrayValue else { throw InvalidRequest("'models' must be an array of model ids") }
            for item in array {
                guard let id = item.stringValue, !id.isEmpty else { throw InvalidRequest("'models' must be an array of model ids") }
                if !models.contains(id) { models.append(id) }
            }
        }
        guard !models.isEmpty else { throw InvalidRequest("'model' is required") }
        self.models = models

        var prompt = PromptBound()
        if let messages = body["messages"] {
            guard let array = messages.arrayValue, !array.isEmpty else {
                throw InvalidRequest("'messages' must be a non-empty array")
            }
            for (index, message) in array.enumerated() {
                guard let object = message.objectValue else { throw InvalidRequest("messages[\(index)] must be an object") }
                guard let role = object["role"]?.stringValue, ChatRequest.roles.contains(role) else {
                    throw InvalidRequest("messages[\(index)].role must be one of system, developer, user, assistant, tool")
                }
                switch object["content"] {
                case .string(let text)?: prompt.textTokens += ChatRequest.tokenUpperBound(text)
                case .array(let parts)?:
                    for part in parts { prompt.add(part: part) }
                case nil, .null?:
                    guard role == "assistant" else { throw InvalidRequest("messages[\(index)].content is required") }
                default: throw InvalidRequest("messages[\(index)].content must be a string or an array of content parts")
                }
                if let calls = object["tool_calls"] { prompt.textTokens += ChatRequest.tokenUpperBound(calls) }
                for field in ["name", "tool_call_id"] {
                    if let text = object[field]?.stringValue { prompt.textTokens += ChatRequest.tokenUpperBound(text) }
                }
                prompt.textTokens += PromptBound.perMessage
            }
        } else if let text = body["prompt"]?.stringValue {
            prompt.textTokens += ChatRequest.tokenUpperBound(text)
        } else {
            throw InvalidRequest("'messages' is required")
        }
        if let tools = body["tools"] {
            guard let list = tools.arrayValue ?? (tools.isNull ? [] : nil) else { throw InvalidRequest("'tools' must be an array") }
            prompt.textTokens += ChatRequest.tokenUpperBound(tools) + PromptBound.perTool * list.count
        }
        // A schema or tool choice is rendered into the prompt by the provider.
        for field in ["response_format", "tool_choice"] {
            if let value = body[field], !value.isNull { prompt.textTokens += ChatRequest.tokenUpperBound(value) }
        }
        prompt.textTokens += PromptBound.perRequest
        self.prompt = prompt

        switch body["stream"] {
        case nil, .null?: stream = false
        case .bool(let flag)?: stream = flag
        default: throw InvalidRequest("'stream' must be a boolean")
        }

        maxTokens = nil
        for key in ["max_completion_tokens", "max_tokens"] {
            guard let value = body[key], !value.isNull else { continue }
            guard let count = value.intValue, count >= 1 else { throw InvalidRequest("'\(key)' must be an integer ≥ 1") }
            maxTokens = count
            break
        }
        switch body["n"] {
        case nil, .null?: choices = 1
        case let value?:
            guard let count = value.intValue, (1...ChatRequest.maximumChoices).contains(count) else {
                throw InvalidRequest("'n' must be an integer from 1 to \(ChatRequest.maximumChoices)")
            }
            choices = count
        }
        for key in ["temperature", "top_p", "frequency_penalty", "presence_penalty"] {
            guard let value = body[key], !value.isNull else { continue }
            switch value {
            case .int, .double: break
            default: throw InvalidRequest("'\(key)' must be a number")
            }
        }

        provider = try ProviderPreferences(json: body["provider"])
        reasoning = try ReasoningRequest(body: body)
        usedParameters = ChatRequest.routableParameters.filter { key in
            guard let value = body[key] else { return false }
            return !value.isNull
        }
        if reasoning != nil && !usedParameters.contains("reasoning") { usedParameters.append("reasoning") }
    }

    /// The first model asked for.
    public var requestedModel: String { models[0] }

    /// The most completions one request may ask for (`n`), as OpenAI allows.
    public static let maximumChoices = 128

    /// An upper bound on the tokens in a text: byte-level BPE tokenizers (every major provider's)
    /// emit at most one token per UTF-8 byte, plus one for a boundary. Reservations are sized with
    /// it; the charge uses the upstream's own count, capped at the reservation.
    static func tokenUpperBound(_ text: String) -> Int {
        text.utf8.count + 1
    }

    /// A structured value (tool definitions, calls, schemas) bounds at its serialized bytes:
    /// digits, punctuation and escapes are bytes a tokenizer may see too.
    static func tokenUpperBound(_ value: JSONValue) -> Int {
        JSONWriter.bytes(value).count + 1
    }
}

/// The OpenRouter `provider` object: how to choose among a model's endpoints.
public struct ProviderPreferences: Sendable, Hashable {
    public enum Sort: String, Sendable, Hashable { case price, throughput, latency }

    public var order: [String]?
    public var allowFallbacks: Bool = true
    public var only: [String]?
    public var ignore: [String]?
    public var requireParameters: Bool = false
    /// `deny` excludes endpoints that train on or retain prompts.
    public var denyDataCollection: Bool = false
    public var zdr: Bool = false
    public var quantizations: [String]?
    public var sort: Sort?
    /// `sort.partition: "none"` sorts the endpoints of every listed model together.
    public var sortAcrossModels = false
    /// Soft preferences: endpoints known to meet them are tried first; never a failure.
    public var preferredMinThroughput: Double?
    public var preferredMaxLatencySeconds: Double?
    /// Hard ceilings in USD per million tokens, as exact atto-dollar amounts per token × 1e6.
    public var maxPromptPerMillion: ExactDecimal?
    public var maxCompletionPerMillion: ExactDecimal?

    public init() {}

    public init(json: JSONValue?) throws(InvalidRequest) {
        guard let json, !json.isNull else { return }
        guard let object = json.objectValue else { throw InvalidRequest("'provider' must be an object") }
        func strings(_ key: String) throws(InvalidRequest) -> [String]? {
            guard let value = object[key], !value.isNull else { return nil }
            guard let array = value.arrayValue else { throw InvalidRequest("'provider.\(key)' must be an array of strings") }
            var result: [String] = []
            for item in array {
                guard let text = item.stringValue else { throw InvalidRequest("'provider.\(key)' must be an array of strings") }
                result.append(text.lowercased())
            }
            return result
        }
        func flag(_ key: String) throws(InvalidRequest) -> Bool? {
            guard let value = object[key], !value.isNull else { return nil }
            guard let bool = value.boolValue else { throw InvalidRequest("'provider.\(key)' must be a boolean") }
            return bool
        }
        order = try strings("order")
        only = try strings("only")
        ignore = try strings("ignore")
        quantizations = try strings("quantizations")
        allowFallbacks = try flag("allow_fallbacks") ?? true
        requireParameters = try flag("require_parameters") ?? false
        zdr = try flag("zdr") ?? false
        if let value = object["data_collection"], !value.isNull {
            switch value.stringValue {
            case "allow": denyDataCollection = false
            case "deny": denyDataCollection = true
            default: throw InvalidRequest("'provider.data_collection' must be \"allow\" or \"deny\"")
            }
        }
        if let value = object["sort"], !value.isNull {
            let text = value.stringValue ?? value["by"]?.stringValue
            guard let text, let parsed = Sort(rawValue: text) else {
                throw InvalidRequest("'provider.sort' must be \"price\", \"throughput\" or \"latency\"")
            }
            sort = parsed
            if let partition = value["partition"]?.stringValue {
                guard partition == "model" || partition == "none" else {
                    throw InvalidRequest("'provider.sort.partition' must be \"model\" or \"none\"")
                }
                sortAcrossModels = partition == "none"
            }
        }
        func threshold(_ key: String) throws(InvalidRequest) -> Double? {
            guard let value = object[key], !value.isNull else { return nil }
            // A number means p50; of a percentile object, p50 is the one this node tracks.
            let number = value.numericValue ?? value["p50"]?.numericValue
            guard let number, number >= 0 else { throw InvalidRequest("'provider.\(key)' must be a number or {p50: number}") }
            return number
        }
        preferredMinThroughput = try threshold("preferred_min_throughput")
        preferredMaxLatencySeconds = try threshold("preferred_max_latency")
        if let value = object["max_price"], !value.isNull {
            guard let prices = value.objectValue else { throw InvalidRequest("'provider.max_price' must be an object") }
            func price(_ key: String) throws(InvalidRequest) -> ExactDecimal? {
                guard let field = prices[key], !field.isNull else { return nil }
                guard let text = field.decimalText, let decimal = ExactDecimal(text), decimal.significand >= 0 else {
                    throw InvalidRequest("'provider.max_price.\(key)' must be a non-negative number")
                }
                return decimal
            }
            maxPromptPerMillion = try price("prompt")
            maxCompletionPerMillion = try price("completion")
        }
    }
}

/// The unified reasoning control: OpenRouter's `reasoning` object, the `reasoning_effort`
/// shorthand and the legacy `include_reasoning` flag, read once for every adapter.
public struct ReasoningRequest: Sendable, Hashable {
    public enum Effort: String, Sendable, Hashable, CaseIterable {
        case none, minimal, low, medium, high, xhigh, max

        /// Share of the output budget given to thinking, for providers that take a token budget.
        public var budgetShare: (numerator: Int, denominator: Int) {
            switch self {
            case .none: (0, 1)
            case .minimal: (1, 10)
            case .low: (1, 5)
            case .medium: (1, 2)
            case .high: (4, 5)
            case .xhigh, .max: (19, 20)
            }
        }
    }

    public var effort: Effort?
    /// An explicit thinking budget in tokens.
    public var maxTokens: Int?
    /// Reason, but leave the reasoning text out of the response (it is still billed).
    public var exclude: Bool
    /// False when the client turned reasoning off.
    public var enabled: Bool

    public init(effort: Effort? = nil, maxTokens: Int? = nil, exclude: Bool = false, enabled: Bool = true) {
        self.effort = effort
        self.maxTokens = maxTokens
        self.exclude = exclude
        self.enabled = enabled
    }

    init?(body: JSONObject) throws(InvalidRequest) {
        var found = false
        effort = nil
        maxTokens = nil
        exclude = false
        enabled = true
        if let shorthand = body["reasoning_effort"], !shorthand.isNull {
            guard let text = shorthand.stringValue, let parsed = Effort(rawValue: text) else {
                throw InvalidRequest("'reasoning_effort' must be one of \(Effort.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            effort = parsed
            found = true
        }
        if let include = body["include_reasoning"]?.boolValue {
            exclude = !include
            found = true
        }
        if let object = body["reasoning"], !object.isNull {
            guard object.objectValue != nil else { throw InvalidRequest("'reasoning' must be an object") }
            found = true
            if let text = object["effort"]?.stringValue {
                guard let parsed = Effort(rawValue: text) else {
                    throw InvalidRequest("'reasoning.effort' must be one of \(Effort.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                effort = parsed
            }
            if let budget = object["max_tokens"], !budget.isNull {
                guard let count = budget.intValue, count >= 0 else { throw InvalidRequest("'reasoning.max_tokens' must be an integer ≥ 0") }
                maxTokens = count
            }
            if let flag = object["exclude"]?.boolValue { exclude = flag }
            if let flag = object["enabled"]?.boolValue { enabled = flag }
        }
        guard found else { return nil }
        if effort == ReasoningRequest.Effort.none || maxTokens == 0 { enabled = false }
    }

    /// A thinking budget in tokens for a response of at most `outputLimit` tokens, or nil when
    /// reasoning is off. At least 1,024 (Anthropic's minimum), always below the output limit.
    public func budget(outputLimit: Int) -> Int? {
        guard enabled else { return nil }
        let share = (effort ?? .medium).budgetShare
        let wanted = maxTokens ?? outputLimit * share.numerator / share.denominator
        let budget = min(max(wanted, 1024), 32_000)
        return budget < outputLimit ? budget : nil
    }
}

/// What bounds a prompt's token count before it reaches a provider: text (one token per byte)
/// and counts of media parts, whose cost depends on the endpoint (see
/// `ModelEndpoint.imageTokenAllowance`).
public struct PromptBound: Sendable, Hashable {
    /// Tokens of text, message framing, tool definitions and schemas.
    public var textTokens = 0
    /// Image parts (`image_url`, `input_image`, Anthropic `image`).
    public var images = 0
    /// File, document and audio parts, with an allowance each on top of their bytes.
    public var files = 0

    public init(textTokens: Int = 0, images: Int = 0, files: Int = 0) {
        self.textTokens = textTokens
        self.images = images
        self.files = files
    }

    /// Chat-template tokens around each message (role markers, separators): OpenAI documents 3–4,
    /// Anthropic and Gemini a few more.
    public static let perMessage = 8
    /// Template tokens around each tool definition, beyond its JSON text.
    public static let perTool = 16
    /// Template tokens around the whole conversation (the assistant's opening marker).
    public static let perRequest = 8
    /// Tokens one file or document part may add beyond its own bytes: a rendered PDF page is
    /// charged as an image plus its text (Anthropic: up to ~3,000 tokens a page).
    public static let perFile = 3_000

    /// Counts a content part by its `type`, as the adapters translate it: a part's other fields
    /// (a stray `text` on an image part) cannot make it count as less than it is.
    mutating func add(part: JSONValue) {
        switch part["type"]?.stringValue {
        case "text"?, "input_text"?:
            textTokens += ChatRequest.tokenUpperBound(part["text"]?.stringValue ?? "")
        case "image_url"?, "input_image"?, "image"?:
            images += 1  // counted by pixels, not bytes: the endpoint's per-image allowance
        default:
            // A file, document or audio part — or one of an unknown type: its bytes (base64 or a
            // URL) bound any text in it, and the allowance covers what rendering adds.
            files += 1
            textTokens += ChatRequest.tokenUpperBound(part)
        }
    }
}

/// A request body that breaks the API contract. The message names the field and says what is
/// wrong; the gateway answers it as a 400 in the caller's error shape.
public struct InvalidRequest: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
