/// The parts of a chat completion request that routing and billing need, read from the
/// client's JSON body in one pass that builds no tree. The body itself travels on as
/// `bodyBytes`: an adapter that speaks the same format copies it, member by member.
public struct ChatRequest: Sendable {
    /// The request body exactly as the client sent it: one JSON object, valid UTF-8.
    public let bodyBytes: [UInt8]
    /// The body's top-level members, in the order sent; of a repeated name, only the last.
    public let members: [Member]
    /// The body as a tree, built anew on each call (a parse of the whole body): for adapters
    /// that translate it. `bodyBytes` passed the same grammar, so it always parses.
    public func parsedBody() -> JSONObject {
        (try? JSONParser.parse(bodyBytes))?.objectValue ?? JSONObject()
    }
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
    /// Set for an embeddings request: the inputs to embed, instead of a conversation to answer.
    public var embeddings: EmbeddingsInput?
    /// The client's own body when it spoke an upstream's native format (Anthropic Messages):
    /// an upstream of that format gets it instead of a translation, so nothing is lost.
    public var native: NativeBody?

    /// What an embeddings request embeds.
    public struct EmbeddingsInput: Sendable, Hashable {
        public enum Items: Sendable, Hashable {
            case texts([String])
            /// Token ids, which only upstreams of the model's own tokenizer (OpenAI's format) take.
            case tokens([[Int]])
        }

        public var items: Items
        /// Shorter vectors than the model's own, where it allows them.
        public var dimensions: Int?
        /// The client wants each vector as base64 of little-endian float32s, not a JSON array.
        public var base64: Bool

        public init(items: Items, dimensions: Int? = nil, base64: Bool = false) {
            self.items = items
            self.dimensions = dimensions
            self.base64 = base64
        }

        public var count: Int {
            switch items {
            case .texts(let texts): texts.count
            case .tokens(let lists): lists.count
            }
        }
    }

    /// A request body in an upstream wire format, as the client sent it.
    public struct NativeBody: Sendable {
        public var format: WireFormat
        public var body: JSONObject
        /// Headers the client sent for that format's upstream (`anthropic-beta`).
        public var headers: [(String, String)]

        public init(format: WireFormat, body: JSONObject, headers: [(String, String)] = []) {
            self.format = format
            self.body = body
            self.headers = headers
        }
    }

    /// A top-level member of the body where it lies in `bodyBytes`.
    public struct Member: Sendable, Hashable {
        /// The key, escapes decoded.
        public var name: String
        /// The field when the router reads or owns it.
        public var field: Field?
        /// From the key's opening quote to the end of the value: the member as written.
        public var span: Range<Int>
        /// The value's bytes.
        public var value: Range<Int>
    }

    /// Every top-level field the router reads or owns. A client may not spell one in other
    /// letter case (see `BodyFields.fields`).
    public enum Field: Int, Sendable, Hashable, CaseIterable {
        case model, models, messages, prompt, tools, functions, functionCall, responseFormat, toolChoice, stream
        case streamOptions, maxTokens, maxCompletionTokens, n, temperature, topP, topK, frequencyPenalty
        case presencePenalty, stop, seed, logitBias, logprobs, topLogprobs, provider, reasoning, reasoningEffort
        case includeReasoning, route, transforms, plugins, usage, debug, sessionID

        /// The name a client writes.
        public var name: String {
            switch self {
            case .model: "model"
            case .models: "models"
            case .messages: "messages"
            case .prompt: "prompt"
            case .tools: "tools"
            case .functions: "functions"
            case .functionCall: "function_call"
            case .responseFormat: "response_format"
            case .toolChoice: "tool_choice"
            case .stream: "stream"
            case .streamOptions: "stream_options"
            case .maxTokens: "max_tokens"
            case .maxCompletionTokens: "max_completion_tokens"
            case .n: "n"
            case .temperature: "temperature"
            case .topP: "top_p"
            case .topK: "top_k"
            case .frequencyPenalty: "frequency_penalty"
            case .presencePenalty: "presence_penalty"
            case .stop: "stop"
            case .seed: "seed"
            case .logitBias: "logit_bias"
            case .logprobs: "logprobs"
            case .topLogprobs: "top_logprobs"
            case .provider: "provider"
            case .reasoning: "reasoning"
            case .reasoningEffort: "reasoning_effort"
            case .includeReasoning: "include_reasoning"
            case .route: "route"
            case .transforms: "transforms"
            case .plugins: "plugins"
            case .usage: "usage"
            case .debug: "debug"
            case .sessionID: "session_id"
            }
        }

        /// The field a name means, once its escapes are decoded.
        public init?(name: String) {
            guard let field = Self.allCases.first(where: { $0.name == name }) else { return nil }
            self = field
        }

        /// Fields that exist only between the client and the router; never sent upstream.
        public var isRouterOnly: Bool {
            switch self {
            case .models, .route, .provider, .transforms, .plugins, .usage, .debug, .sessionID: true
            default: false
            }
        }

        /// The field whose name is the bytes at `key`, compared by length first: no string is built.
        static func named(_ key: Range<Int>, in scanner: JSONScanner) -> Field? {
            guard key.count < byLength.count else { return nil }
            for (field, name) in byLength[key.count] where name.indices.allSatisfy({ name[$0] == scanner.bytes[key.lowerBound + $0] }) {
                return field
            }
            return nil
        }

        private static let byLength: [[(Field, [UInt8])]] = {
            var table = [[(Field, [UInt8])]](repeating: [], count: allCases.map(\.name.utf8.count).max()! + 1)
            for field in allCases { table[field.name.utf8.count].append((field, Array(field.name.utf8))) }
            return table
        }()
    }

    /// Parameters whose support differs between endpoints (see `ModelEndpoint.supportedParameters`).
    static let routableParameters: [Field] = [
        .tools, .toolChoice, .responseFormat, .temperature, .topP, .topK, .stop, .seed,
        .frequencyPenalty, .presencePenalty, .logitBias, .logprobs, .topLogprobs, .reasoning,
    ]

    static let roles: Set<String> = ["system", "developer", "user", "assistant", "tool", "function"]

    /// Validates and reads a request body given as a tree (tests, and fronts that build one).
    public init(json: JSONValue) throws(InvalidRequest) {
        try self.init(bytes: JSONWriter.bytes(json))
    }

    /// Validates and reads a request body. Throws an `InvalidRequest` that names the field and
    /// says what is wrong.
    public init(bytes: [UInt8]) throws(InvalidRequest) {
        bodyBytes = bytes
        let read = try bytes.withUnsafeBytes { raw -> Result<BodyFields, InvalidRequest> in
            do throws(InvalidRequest) { return .success(try BodyFields(JSONScanner(raw))) } catch { return .failure(error) }
        }.get()
        members = read.members
        models = read.models
        stream = read.stream
        maxTokens = read.maxTokens
        choices = read.choices
        prompt = read.prompt
        provider = read.provider
        reasoning = read.reasoning
        var used = read.usedParameters
        if reasoning != nil && !used.contains("reasoning") { used.append("reasoning") }
        usedParameters = used
    }

    /// The value of a field the router reads, built as a tree; nil when the body has none.
    public func field(_ field: Field) -> JSONValue? {
        guard let range = members.first(where: { $0.field == field })?.value else { return nil }
        return bodyBytes.withUnsafeBytes { JSONScanner($0).value(range) }
    }

    /// The first model asked for.
    public var requestedModel: String { models[0] }

    /// The most top-level fields a body may have: OpenAI's API has about forty.
    public static let maximumFields = 1_024

    /// The most completions one request may ask for (`n`), as OpenAI allows.
    public static let maximumChoices = 128
}

/// One pass over a chat request body: the checks and figures of `ChatRequest`, read from the
/// scanner's spans. Only the router's own small objects (`provider`, `reasoning`) are built as trees.
///
/// Token bounds: byte-level BPE tokenizers (every major provider's) emit at most one token per
/// UTF-8 byte, plus one for a boundary, so a text bounds at its decoded bytes + 1, and a
/// structured value (tool definitions, calls, schemas) at its compact serialized bytes + 1 —
/// digits, punctuation and escapes are bytes a tokenizer may see too. Reservations are sized
/// with these bounds; the charge uses the upstream's own count, capped at the reservation.
private struct BodyFields {
    var members: [ChatRequest.Member] = []
    var models: [String] = []
    var stream = false
    var maxTokens: Int?
    var choices = 1
    var prompt = PromptBound()
    var provider = ProviderPreferences()
    var reasoning: ReasoningRequest?
    var usedParameters: [String] = []

    init(_ scanner: JSONScanner) throws(InvalidRequest) {
        guard scanner.isValidUTF8() else { throw InvalidRequest("Request body is not valid UTF-8") }
        let document: Range<Int>
        do { document = try scanner.document() } catch { throw InvalidRequest("Request body is not valid JSON") }
        guard scanner.kind(of: document) == UInt8(ascii: "{") else { throw InvalidRequest("Request body must be a JSON object") }
        // `document()` checked the whole body, so the scans below meet no malformed JSON: they
        // throw only to stop early, and then say why in a captured `InvalidRequest`.
        var members: [ChatRequest.Member] = []
        members.reserveCapacity(16)
        // The last value of each field the router reads (null counts as absent).
        var fields = [Range<Int>?](repeating: nil, count: ChatRequest.Field.allCases.count)
        var failure: InvalidRequest?
        _ = try? scanner.scanObject(at: document.lowerBound, depth: 0) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            guard members.count < ChatRequest.maximumFields else {
                failure = InvalidRequest("Request body has more than \(ChatRequest.maximumFields) fields")
                throw JSONScanner.Invalid(offset: valueStart)
            }
            let end = try scanner.skipValue(at: valueStart, depth: 1)
            let name: String
            var field: ChatRequest.Field?
            if escaped {
                name = scanner.string((key.lowerBound - 1)..<(key.upperBound + 1)) ?? ""
                field = ChatRequest.Field(name: name)
            } else {
                name = String(decoding: UnsafeRawBufferPointer(rebasing: scanner.bytes[key]), as: UTF8.self)
                field = ChatRequest.Field.named(key, in: scanner)
            }
            if field == nil, !scanner.isLowercaseASCII(key), let meant = ChatRequest.Field(name: Self.folded(name)) {
                failure = InvalidRequest("'\(name)' is not '\(meant.name)': field names are case-sensitive")
                throw JSONScanner.Invalid(offset: valueStart)
            }
            if let field { fields[field.rawValue] = scanner.isNull(valueStart..<end) ? nil : valueStart..<end }
            members.append(ChatRequest.Member(name: name, field: field, span: (key.lowerBound - 1)..<end, value: valueStart..<end))
            return end
        }
        if let failure { throw failure }
        self.members = Self.lastOfEachName(members)
        func value(_ field: ChatRequest.Field) -> Range<Int>? { fields[field.rawValue] }

        if let model = value(.model) {
            guard let id = scanner.string(model), !id.isEmpty else { throw InvalidRequest("'model' must be a non-empty string") }
            models.append(id)
        }
        if let list = value(.models) {
            guard scanner.kind(of: list) == UInt8(ascii: "[") else { throw InvalidRequest("'models' must be an array of model ids") }
            var ids: [String] = []
            var valid = true
            _ = try? scanner.scanArray(at: list.lowerBound, depth: 1) { start throws(JSONScanner.Invalid) in
                let end = try scanner.skipValue(at: start, depth: 2)
                if let id = scanner.string(start..<end), !id.isEmpty { ids.append(id) } else { valid = false }
                return end
            }
            guard valid else { throw InvalidRequest("'models' must be an array of model ids") }
            for id in ids where !models.contains(id) { models.append(id) }
        }
        guard !models.isEmpty else { throw InvalidRequest("'model' is required") }

        if let messages = self.members.first(where: { $0.field == .messages })?.value {
            try readMessages(messages, scanner)
        } else if let text = value(.prompt), scanner.kind(of: text) == UInt8(ascii: "\"") {
            prompt.textTokens += scanner.decodedByteCount(ofString: text) + 1
        } else {
            throw InvalidRequest("'messages' is required")
        }
        if let tools = value(.tools) {
            var count = 0
            guard scanner.kind(of: tools) == UInt8(ascii: "[") else { throw InvalidRequest("'tools' must be an array") }
            _ = try? scanner.scanArray(at: tools.lowerBound, depth: 1) { start throws(JSONScanner.Invalid) in
                count += 1
                return try scanner.skipValue(at: start, depth: 2)
            }
            prompt.textTokens += scanner.compactByteCount(tools) + 1 + PromptBound.perTool * count
        }
        // A schema or tool choice is rendered into the prompt by the provider, and so are the
        // legacy `functions`.
        for field in [ChatRequest.Field.responseFormat, .toolChoice, .functions, .functionCall] {
            if let range = value(field) { prompt.textTokens += scanner.compactByteCount(range) + 1 }
        }
        prompt.textTokens += PromptBound.perRequest

        if let flag = value(.stream) {
            switch scanner.kind(of: flag) {
            case UInt8(ascii: "t"): stream = true
            case UInt8(ascii: "f"): stream = false
            default: throw InvalidRequest("'stream' must be a boolean")
            }
        }
        for field in [ChatRequest.Field.maxCompletionTokens, .maxTokens] {
            guard let range = value(field) else { continue }
            guard let count = scanner.integer(range), count >= 1 else { throw InvalidRequest("'\(field.name)' must be an integer ≥ 1") }
            maxTokens = count
            break
        }
        if let range = value(.n) {
            guard let count = scanner.integer(range), (1...ChatRequest.maximumChoices).contains(count) else {
                throw InvalidRequest("'n' must be an integer from 1 to \(ChatRequest.maximumChoices)")
            }
            choices = count
        }
        for field in [ChatRequest.Field.temperature, .topP, .frequencyPenalty, .presencePenalty] {
            guard let range = value(field) else { continue }
            switch scanner.value(range) {
            case .int: break
            case .double(let number) where number.isFinite: break
            default: throw InvalidRequest("'\(field.name)' must be a finite number")
            }
        }

        provider = try ProviderPreferences(json: value(.provider).map(scanner.exactValue))
        reasoning = try ReasoningRequest(
            reasoning: value(.reasoning).map(scanner.value), effort: value(.reasoningEffort).map(scanner.value),
            include: value(.includeReasoning).map(scanner.value))
        usedParameters = ChatRequest.routableParameters.compactMap { value($0) == nil ? nil : $0.name }
    }

    /// Of each repeated name, only the last member: the one the router read, and the one it
    /// forwards. Names are compared by length first, so a body without repeats costs little.
    static func lastOfEachName(_ members: [ChatRequest.Member]) -> [ChatRequest.Member] {
        func repeated(_ index: Int) -> Bool {
            let member = members[index]
            let length = member.name.utf8.count
            return members[(index + 1)...].contains { $0.name.utf8.count == length && $0.name == member.name }
        }
        guard members.count > 32 else {
            guard members.indices.contains(where: repeated) else { return members }
            return members.indices.filter { !repeated($0) }.map { members[$0] }
        }
        var seen = Set<String>()
        return members.reversed().filter { seen.insert($0.name).inserted }.reversed()
    }

    /// Calls `body` with each element of the array at `range` (checked already) and its
    /// position. The first `InvalidRequest` it throws ends the walk and is rethrown. Returns how
    /// many elements there were.
    @discardableResult
    static func forEachElement(
        of range: Range<Int>, depth: Int, _ scanner: JSONScanner, _ body: (Range<Int>, Int) throws(InvalidRequest) -> Void
    ) throws(InvalidRequest) -> Int {
        var failure: InvalidRequest?
        var position = 0
        _ = try? scanner.scanArray(at: range.lowerBound, depth: depth) { start throws(JSONScanner.Invalid) in
            let end = try scanner.skipValue(at: start, depth: depth + 1)
            do throws(InvalidRequest) {
                try body(start..<end, position)
            } catch {
                failure = error
                throw JSONScanner.Invalid(offset: start)  // stops the scan
            }
            position += 1
            return end
        }
        if let failure { throw failure }
        return position
    }

    /// Checks each message and adds its size to the prompt bound.
    private mutating func readMessages(_ messages: Range<Int>, _ scanner: JSONScanner) throws(InvalidRequest) {
        guard scanner.kind(of: messages) == UInt8(ascii: "[") else { throw InvalidRequest("'messages' must be a non-empty array") }
        var bound = prompt
        let count = try Self.forEachElement(of: messages, depth: 1, scanner) { message, index throws(InvalidRequest) in
            try Self.readMessage(message, index: index, scanner, into: &bound)
        }
        guard count > 0 else { throw InvalidRequest("'messages' must be a non-empty array") }
        prompt = bound
    }

    private static func readMessage(_ range: Range<Int>, index: Int, _ scanner: JSONScanner, into prompt: inout PromptBound)
        throws(InvalidRequest)
    {
        guard scanner.kind(of: range) == UInt8(ascii: "{") else { throw InvalidRequest("messages[\(index)] must be an object") }
        let found = try fields(
            ["role", "content", "tool_calls", "function_call", "name", "tool_call_id"], of: range, depth: 2, scanner
        ) { "messages[\(index)]" }
        guard let role = found[0], let name = scanner.string(role), ChatRequest.roles.contains(name) else {
            throw InvalidRequest("messages[\(index)].role must be one of system, developer, user, assistant, tool")
        }
        var extra = 0
        for calls in [found[2], found[3]] {
            if let calls { extra += scanner.compactByteCount(calls) + 1 }
        }
        for text in [found[4], found[5]] {
            if let text, scanner.kind(of: text) == UInt8(ascii: "\"") { extra += scanner.decodedByteCount(ofString: text) + 1 }
        }
        if let content = found[1], scanner.kind(of: content) == UInt8(ascii: "\"") {
            prompt.textTokens += scanner.decodedByteCount(ofString: content) + 1
        } else if let content = found[1], scanner.kind(of: content) == UInt8(ascii: "[") {
            try forEachElement(of: content, depth: 3, scanner) { part, position throws(InvalidRequest) in
                try prompt.add(part: part, scanner) { "messages[\(index)].content[\(position)]" }
            }
        } else if found[1].map({ scanner.isNull($0) }) ?? true {
            guard name == "assistant" else { throw InvalidRequest("messages[\(index)].content is required") }
        } else {
            throw InvalidRequest("messages[\(index)].content must be a string or an array of content parts")
        }
        prompt.textTokens += extra + PromptBound.perMessage
    }

    /// The values of `names` in the object at `range`, nil where absent. A name given twice, or
    /// in other letters that fold to it (`"Content"`, `"ſtream"`), is refused: JSON parsers
    /// differ on which copy they keep (the first, the last, or — Go's — any case-insensitive
    /// match), and what the router counts must be what the upstream reads.
    static func fields(
        _ names: [StaticString], of range: Range<Int>, depth: Int, _ scanner: JSONScanner, at path: () -> String
    ) throws(InvalidRequest) -> [Range<Int>?] {
        var found = [Range<Int>?](repeating: nil, count: names.count)
        var failure: InvalidRequest?
        _ = try? scanner.scanObject(at: range.lowerBound, depth: depth) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            let end = try scanner.skipValue(at: valueStart, depth: depth + 1)
            if let slot = names.firstIndex(where: { scanner.key(key, escaped: escaped, is: $0) }) {
                guard found[slot] == nil else {
                    failure = InvalidRequest("\(path()) has '\(names[slot])' more than once")
                    throw JSONScanner.Invalid(offset: valueStart)
                }
                found[slot] = valueStart..<end
            } else if !scanner.isLowercaseASCII(key) {
                let name = scanner.string((key.lowerBound - 1)..<(key.upperBound + 1)) ?? ""
                if let meant = names.first(where: { folded(name) == "\($0)" }) {
                    failure = InvalidRequest("\(path()).\(name) is not '\(meant)': field names are case-sensitive")
                    throw JSONScanner.Invalid(offset: valueStart)
                }
            }
            return end
        }
        if let failure { throw failure }
        return found
    }

    /// A name as Go's `encoding/json` matches it: letters folded to lower case, including the
    /// two non-ASCII letters that fold to ASCII ones (ſ to s, the Kelvin sign to k).
    static func folded(_ name: String) -> String {
        var result = ""
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0x41...0x5A: result.unicodeScalars.append(Unicode.Scalar(scalar.value + 0x20)!)
            case 0x17F: result.append("s")
            case 0x212A: result.append("k")
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
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

    /// The largest `max_price` a client may write, USD per million tokens: anything above it
    /// would be no ceiling at all.
    static let maximumPrice = ExactDecimal("1e30")!

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
            guard let number, number >= 0, number.isFinite else {
                throw InvalidRequest("'provider.\(key)' must be a finite number ≥ 0 or {p50: number}")
            }
            return number
        }
        preferredMinThroughput = try threshold("preferred_min_throughput")
        preferredMaxLatencySeconds = try threshold("preferred_max_latency")
        if let value = object["max_price"], !value.isNull {
            guard let prices = value.objectValue else { throw InvalidRequest("'provider.max_price' must be an object") }
            func price(_ key: String) throws(InvalidRequest) -> ExactDecimal? {
                guard let field = prices[key], !field.isNull else { return nil }
                guard let text = field.decimalText, let decimal = ExactDecimal(text), decimal.significand >= 0,
                    !decimal.isGreater(than: ProviderPreferences.maximumPrice)
                else {
                    throw InvalidRequest("'provider.max_price.\(key)' must be a number from 0 to 1e30 (USD per million tokens)")
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

    init?(reasoning: JSONValue?, effort shorthand: JSONValue?, include: JSONValue?) throws(InvalidRequest) {
        var found = false
        effort = nil
        maxTokens = nil
        exclude = false
        enabled = true
        if let shorthand, !shorthand.isNull {
            guard let text = shorthand.stringValue, let parsed = Effort(rawValue: text) else {
                throw InvalidRequest("'reasoning_effort' must be one of \(Effort.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            effort = parsed
            found = true
        }
        if let include = include?.boolValue {
            exclude = !include
            found = true
        }
        if let object = reasoning, !object.isNull {
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
    /// Files given by URL: the router never sees their size, so each may fill the context.
    public var unboundedFiles = 0

    /// Counts a content part by its `type`, as the adapters translate it: a part's other fields
    /// (a stray `text` on an image part) cannot make it count as less than it is.
    mutating func add(part range: Range<Int>, _ scanner: JSONScanner, at path: () -> String) throws(InvalidRequest) {
        var type: Range<Int>?
        var text: Range<Int>?
        if scanner.kind(of: range) == UInt8(ascii: "{") {
            let found = try BodyFields.fields(["type", "text"], of: range, depth: 4, scanner, at: path)
            (type, text) = (found[0], found[1])
        }
        let kind = type.flatMap(scanner.string)
        switch kind {
        case "text"?, "input_text"?:
            if let text, scanner.kind(of: text) == UInt8(ascii: "\"") {
                textTokens += scanner.decodedByteCount(ofString: text) + 1
            } else {
                textTokens += 1
            }
        case "image_url"?, "input_image"?, "image"?:
            images += 1  // counted by pixels, not bytes: the endpoint's per-image allowance
        default:
            // A file, document or audio part — or one of an unknown type: its bytes (base64 or a
            // URL) bound any text in it, and the allowance covers what rendering adds.
            files += 1
            textTokens += scanner.compactByteCount(range) + 1
            if kind == "file", Self.isLinked(file: range, scanner) { unboundedFiles += 1 }
        }
    }

    /// True when a file part names its file by URL (`file_url`, or a `file_data` that is no
    /// `data:` URL, as OpenRouter allows) instead of carrying it.
    static func isLinked(file part: Range<Int>, _ scanner: JSONScanner) -> Bool {
        var linked = false
        _ = try? scanner.scanObject(at: part.lowerBound, depth: 4) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            let end = try scanner.skipValue(at: valueStart, depth: 5)
            guard scanner.key(key, escaped: escaped, is: "file"), scanner.kind(at: valueStart) == UInt8(ascii: "{") else { return end }
            _ = try? scanner.scanObject(at: valueStart, depth: 5) { inner, innerEscaped, innerStart throws(JSONScanner.Invalid) in
                let innerEnd = try scanner.skipValue(at: innerStart, depth: 6)
                if scanner.key(inner, escaped: innerEscaped, is: "file_url") || scanner.key(inner, escaped: innerEscaped, is: "url") {
                    linked = true
                } else if scanner.key(inner, escaped: innerEscaped, is: "file_data"), let text = scanner.string(innerStart..<innerEnd),
                    !text.hasPrefix("data:")
                {
                    linked = true
                }
                return innerEnd
            }
            return end
        }
        return linked
    }
}

/// A request body that breaks the API contract. The message names the field and says what is
/// wrong; the gateway answers it as a 400 in the caller's error shape.
public struct InvalidRequest: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
