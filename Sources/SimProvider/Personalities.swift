import Foundation
import NIOCore
import SignalboxCore

/// One provider wire format as the simulator speaks it: how to read a request, and how to write
/// answers, streams and error bodies exactly as that provider does.
protocol Personality: Sendable {
    /// Reads a request body. `pathModel` and `pathStream` come from the URL for formats that put them there.
    func read(_ body: JSONValue, pathModel: String?, pathStream: Bool) -> (request: SimulatedRequest, stream: Bool, includeUsage: Bool)
    /// The provider's own error for `status`: the HTTP status it sends, its body and headers.
    func error(status: Int) -> (status: Int, body: JSONValue, headers: [(String, String)])
    /// The 400 body for a request the provider would refuse, or nil.
    func refusal(_ body: JSONValue) -> JSONValue?
    func response(_ completion: SimulatedModel.Completion, model: String, id: String) -> JSONValue
    /// The error event a provider sends inside a stream it already started.
    func streamError() -> ByteBuffer
    /// The provider's error for a prompt longer than the model's context.
    func contextLengthError(promptTokens: Int) -> JSONValue
    /// Every event of a stream, in order, already framed.
    func events(_ completion: SimulatedModel.Completion, model: String, id: String, includeUsage: Bool) -> [ByteBuffer]
    var streamContentType: String { get }
}

extension Personality {
    var streamContentType: String { "text/event-stream" }

    func refusal(_ body: JSONValue) -> JSONValue? { nil }

    func streamError() -> ByteBuffer {
        Self.data(["error": ["message": "The server is overloaded (simulated)", "type": "server_error", "code": "overloaded"]])
    }

    func contextLengthError(promptTokens: Int) -> JSONValue {
        [
            "error": [
                "message": .string(
                    "This model's maximum context length is 128000 tokens. However, your messages resulted in \(promptTokens + 128000) tokens."
                ),
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
            ]
        ]
    }

    static func data(_ value: JSONValue) -> ByteBuffer {
        var bytes = Array("data: ".utf8)
        JSONWriter.write(value, into: &bytes)
        bytes.append(contentsOf: "\n\n".utf8)
        return ByteBuffer(bytes: bytes)
    }

    static func event(_ name: String, _ value: JSONValue) -> ByteBuffer {
        var bytes = Array("event: \(name)\ndata: ".utf8)
        JSONWriter.write(value, into: &bytes)
        bytes.append(contentsOf: "\n\n".utf8)
        return ByteBuffer(bytes: bytes)
    }

    static func tools(openAIStyle tools: JSONValue?) -> [(name: String, schema: JSONValue)] {
        (tools?.arrayValue ?? []).compactMap { tool in
            guard let function = tool["function"], let name = function["name"]?.stringValue else { return nil }
            return (name, function["parameters"] ?? ["type": "object"])
        }
    }
}

/// OpenAI Chat Completions.
struct OpenAIPersonality: Personality {
    func read(_ body: JSONValue, pathModel: String?, pathStream: Bool) -> (request: SimulatedRequest, stream: Bool, includeUsage: Bool) {
        let messages = body["messages"]?.arrayValue ?? []
        var prompt = messages.map { ($0["role"]?.stringValue ?? "") + ":" + SimulatedRequest.text(of: $0["content"]) }.joined(
            separator: "\n")
        if let text = body["prompt"]?.stringValue { prompt += text }
        let tools = Self.tools(openAIStyle: body["tools"])
        var forced: String?
        switch body["tool_choice"] {
        case .string("required")?: forced = tools.first?.name
        case .object(let choice)?: forced = choice["function"]?["name"]?.stringValue
        default: break
        }
        let format = body["response_format"]?["type"]?.stringValue
        let history = messages.dropLast().map { ($0["role"]?.stringValue ?? "") + ":" + SimulatedRequest.text(of: $0["content"]) }.joined(
            separator: "\n")
        var request = SimulatedRequest(
            model: body["model"]?.stringValue ?? "", promptText: prompt, messageCount: messages.count,
            maxTokens: (body["max_completion_tokens"] ?? body["max_tokens"])?.intValue, tools: tools, forcedTool: forced,
            wantsJSON: format == "json_object" || format == "json_schema", jsonSchema: body["response_format"]?["json_schema"]?["schema"],
            reasons: body["reasoning_effort"]?.stringValue.map { $0 != "none" } ?? false)
        request.cachePrefix = SimulatedModel.automaticCachePrefix(history: history, promptTokens: SimulatedModel.countTokens(prompt))
        request.choices = max(1, min(body["n"]?.intValue ?? 1, 128))
        return (request, body["stream"]?.boolValue ?? false, body["stream_options"]?["include_usage"]?.boolValue ?? false)
    }

    func error(status: Int) -> (status: Int, body: JSONValue, headers: [(String, String)]) {
        let (type, code, message): (String, String, String) =
            switch status {
            case 400: ("invalid_request_error", "invalid_request", "Invalid request (simulated)")
            case 401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)")
            case 403: ("permission_error", "forbidden", "Forbidden (simulated)")
            case 404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)")
            case 429: ("rate_limit_error", "rate_limit_exceeded", "Rate limit reached for requests (simulated)")
            case 503: ("service_unavailable_error", "server_is_overloaded", "The server is overloaded (simulated)")
            default: ("server_error", "server_error", "The server had an error while processing your request (simulated)")
            }
        let headers = status == 429 || status == 503 ? [("retry-after", "1")] : []
        return (status, ["error": ["message": .string(message), "type": .string(type), "param": nil, "code": .string(code)]], headers)
    }

    func usage(_ completion: SimulatedModel.Completion) -> JSONValue {
        [
            "prompt_tokens": .int(Int64(completion.reportedPromptTokens)), "completion_tokens": .int(Int64(completion.completionTokens)),
            "total_tokens": .int(Int64(completion.reportedPromptTokens + completion.completionTokens)),
            "prompt_tokens_details": ["cached_tokens": .int(Int64(completion.cacheRead))],
            "completion_tokens_details": ["reasoning_tokens": .int(Int64(completion.reasoning.count))],
        ]
    }

    func response(_ completion: SimulatedModel.Completion, model: String, id: String) -> JSONValue {
        let choices: [JSONValue] = ([completion] + completion.alternatives).enumerated().map { index, choice in
            var message: JSONObject = ["role": "assistant", "content": choice.toolCall == nil ? .string(choice.text) : nil, "refusal": nil]
            if !choice.reasoning.isEmpty { message["reasoning_content"] = .string(choice.reasoning.joined()) }
            if let call = choice.toolCall {
                message["tool_calls"] = [
                    [
                        "id": .string(call.id), "type": "function",
                        "function": ["name": .string(call.name), "arguments": .string(call.arguments)],
                    ]
                ]
            }
            return [
                "index": .int(Int64(index)), "message": .object(message), "logprobs": nil, "finish_reason": .string(choice.finishReason),
            ]
        }
        return [
            "id": .string(id), "object": "chat.completion", "created": .int(Int64(Date().timeIntervalSince1970)),
            "model": .string(model), "system_fingerprint": "fp_sim", "choices": .array(choices), "usage": usage(completion),
        ]
    }

    func events(_ completion: SimulatedModel.Completion, model: String, id: String, includeUsage: Bool) -> [ByteBuffer] {
        let created = Int64(Date().timeIntervalSince1970)
        var events: [ByteBuffer] = []
        // With `n` > 1 each choice streams in turn, told apart by its index.
        for (index, choice) in ([completion] + completion.alternatives).enumerated() {
            func chunk(_ delta: JSONValue, finish: String? = nil) -> ByteBuffer {
                Self.data([
                    "id": .string(id), "object": "chat.completion.chunk", "created": .int(created), "model": .string(model),
                    "system_fingerprint": "fp_sim",
                    "choices": [
                        ["index": .int(Int64(index)), "delta": delta, "logprobs": nil, "finish_reason": finish.map { .string($0) } ?? nil]
                    ],
                ])
            }
            events.append(chunk(["role": "assistant", "content": ""]))
            events += choice.reasoning.map { chunk(["reasoning_content": .string($0)]) }
            events += choice.tokens.map { chunk(["content": .string($0)]) }
            if let call = choice.toolCall {
                events.append(
                    chunk([
                        "tool_calls": [
                            [
                                "index": 0, "id": .string(call.id), "type": "function",
                                "function": ["name": .string(call.name), "arguments": ""],
                            ]
                        ]
                    ]))
                for piece in TokenPieces.split(call.arguments) {
                    events.append(chunk(["tool_calls": [["index": 0, "function": ["arguments": .string(piece)]]]]))
                }
            }
            events.append(chunk([:], finish: choice.finishReason))
        }
        if includeUsage {
            events.append(
                Self.data([
                    "id": .string(id), "object": "chat.completion.chunk", "created": .int(created),
                    "model": .string(model), "choices": [], "usage": usage(completion),
                ]))
        }
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        return events
    }
}

/// Splits text the simulated tokenizer's way: pieces of about one token (four bytes) each, never
/// splitting a character, so the pieces join back to the text (JSON answers, tool arguments).
enum TokenPieces {
    static func split(_ text: String) -> [String] {
        var pieces: [String] = []
        var current = ""
        for character in text {
            current.append(character)
            if current.utf8.count >= 4 {
                pieces.append(current)
                current = ""
            }
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }
}

/// Anthropic Messages.
struct AnthropicPersonality: Personality {
    func streamError() -> ByteBuffer {
        Self.event("error", ["type": "error", "error": ["type": "overloaded_error", "message": "Overloaded"]])
    }

    func contextLengthError(promptTokens: Int) -> JSONValue {
        [
            "type": "error",
            "error": [
                "type": "invalid_request_error",
                "message": .string("prompt is too long: \(promptTokens + 200000) tokens > 200000 maximum"),
            ],
        ]
    }

    /// As Anthropic: a thinking block sent back must carry the signature it was given (the
    /// simulator signs every thinking block `sig-sim`).
    func refusal(_ body: JSONValue) -> JSONValue? {
        for (turn, message) in (body["messages"]?.arrayValue ?? []).enumerated() {
            for (position, block) in (message["content"]?.arrayValue ?? []).enumerated()
            where block["type"] == "thinking" && block["signature"]?.stringValue != "sig-sim" {
                return [
                    "type": "error",
                    "error": [
                        "type": "invalid_request_error",
                        "message": .string("messages.\(turn).content.\(position): Invalid `signature` in `thinking` block"),
                    ],
                ]
            }
        }
        return nil
    }

    func read(_ body: JSONValue, pathModel: String?, pathStream: Bool) -> (request: SimulatedRequest, stream: Bool, includeUsage: Bool) {
        let messages = body["messages"]?.arrayValue ?? []
        var prompt = SimulatedRequest.text(of: body["system"])
        for message in messages {
            prompt += "\n" + (message["role"]?.stringValue ?? "") + ":" + SimulatedRequest.text(of: message["content"])
        }
        let tools: [(name: String, schema: JSONValue)] = (body["tools"]?.arrayValue ?? []).compactMap { tool in
            guard let name = tool["name"]?.stringValue else { return nil }
            return (name, tool["input_schema"] ?? ["type": "object"])
        }
        var forced: String?
        switch body["tool_choice"]?["type"]?.stringValue {
        case "any": forced = tools.first?.name
        case "tool": forced = body["tool_choice"]?["name"]?.stringValue
        default: break
        }
        var request = SimulatedRequest(
            model: body["model"]?.stringValue ?? "", promptText: prompt, messageCount: messages.count,
            maxTokens: body["max_tokens"]?.intValue, tools: tools, forcedTool: forced)
        request.reasons = body["thinking"]?["type"] == "enabled"
        // Explicit prompt caching: everything up to the last block marked `cache_control`.
        var prefix = "", cached = ""
        let systemBlocks: [JSONValue] = body["system"]?.arrayValue ?? []
        let messageBlocks: [JSONValue] = messages.flatMap { $0["content"]?.arrayValue ?? [] }
        for block in systemBlocks + messageBlocks {
            prefix += block["text"]?.stringValue ?? ""
            if block["cache_control"] != nil { cached = prefix }
        }
        if !cached.isEmpty { request.cachePrefix = (SimulatedModel.fnv1a("cache\u{0}" + cached), SimulatedModel.countTokens(cached)) }
        return (request, body["stream"]?.boolValue ?? false, true)
    }

    func error(status: Int) -> (status: Int, body: JSONValue, headers: [(String, String)]) {
        let (type, message): (String, String) =
            switch status {
            case 400: ("invalid_request_error", "Invalid request (simulated)")
            case 401: ("authentication_error", "invalid x-api-key (simulated)")
            case 402: ("billing_error", "Your credit balance is too low (simulated)")
            case 403: ("permission_error", "Your API key does not have permission (simulated)")
            case 404: ("not_found_error", "model not found (simulated)")
            case 413: ("request_too_large", "Request exceeds the maximum size (simulated)")
            case 429: ("rate_limit_error", "Number of requests has exceeded your rate limit (simulated)")
            case 504: ("timeout_error", "Request timed out (simulated)")
            case 529: ("overloaded_error", "Overloaded")
            default: ("api_error", "Internal server error (simulated)")
            }
        let headers = status == 429 || status == 529 ? [("retry-after", "1")] : []
        return (
            status, ["type": "error", "error": ["type": .string(type), "message": .string(message)], "request_id": "req_sim"], headers
        )
    }

    static func stopReason(_ completion: SimulatedModel.Completion) -> String {
        switch completion.finishReason {
        case "length": "max_tokens"
        case "tool_calls": "tool_use"
        default: "end_turn"
        }
    }

    func usage(_ completion: SimulatedModel.Completion, output: Int) -> JSONValue {
        // Anthropic's input_tokens leave out the cached and cache-written ones.
        [
            "input_tokens": .int(Int64(completion.reportedPromptTokens - completion.cacheRead - completion.cacheWrite)),
            "output_tokens": .int(Int64(output)),
            "cache_creation_input_tokens": .int(Int64(completion.cacheWrite)), "cache_read_input_tokens": .int(Int64(completion.cacheRead)),
        ]
    }

    func response(_ completion: SimulatedModel.Completion, model: String, id: String) -> JSONValue {
        var content: [JSONValue] = []
        if !completion.reasoning.isEmpty {
            content.append(["type": "thinking", "thinking": .string(completion.reasoning.joined()), "signature": "sig-sim"])
        }
        if !completion.tokens.isEmpty { content.append(["type": "text", "text": .string(completion.text)]) }
        if let call = completion.toolCall {
            let input = (try? JSONParser.parse(call.arguments)) ?? [:]
            content.append(["type": "tool_use", "id": .string("toolu_" + call.id), "name": .string(call.name), "input": input])
        }
        return [
            "id": .string("msg_" + id), "type": "message", "role": "assistant", "model": .string(model), "content": .array(content),
            "stop_reason": .string(Self.stopReason(completion)), "stop_sequence": nil,
            "usage": usage(completion, output: completion.completionTokens),
        ]
    }

    func events(_ completion: SimulatedModel.Completion, model: String, id: String, includeUsage: Bool) -> [ByteBuffer] {
        var events = [
            Self.event(
                "message_start",
                [
                    "type": "message_start",
                    "message": [
                        "id": .string("msg_" + id), "type": "message", "role": "assistant", "model": .string(model), "content": [],
                        "stop_reason": nil, "stop_sequence": nil, "usage": usage(completion, output: 1),
                    ],
                ])
        ]
        var index = 0
        if !completion.reasoning.isEmpty {
            events.append(
                Self.event(
                    "content_block_start",
                    [
                        "type": "content_block_start", "index": 0,
                        "content_block": ["type": "thinking", "thinking": ""],
                    ]))
            for piece in completion.reasoning {
                events.append(
                    Self.event(
                        "content_block_delta",
                        [
                            "type": "content_block_delta", "index": 0,
                            "delta": ["type": "thinking_delta", "thinking": .string(piece)],
                        ]))
            }
            events.append(
                Self.event(
                    "content_block_delta",
                    [
                        "type": "content_block_delta", "index": 0,
                        "delta": ["type": "signature_delta", "signature": "sig-sim"],
                    ]))
            events.append(Self.event("content_block_stop", ["type": "content_block_stop", "index": 0]))
            index = 1
        }
        if !completion.tokens.isEmpty || completion.toolCall == nil {
            let text = Int64(index)
            events.append(
                Self.event(
                    "content_block_start",
                    ["type": "content_block_start", "index": .int(text), "content_block": ["type": "text", "text": ""]]))
            events.append(Self.event("ping", ["type": "ping"]))
            for token in completion.tokens {
                events.append(
                    Self.event(
                        "content_block_delta",
                        [
                            "type": "content_block_delta", "index": .int(text),
                            "delta": ["type": "text_delta", "text": .string(token)],
                        ]))
            }
            events.append(Self.event("content_block_stop", ["type": "content_block_stop", "index": .int(text)]))
            index += 1
        }
        if let call = completion.toolCall {
            events.append(
                Self.event(
                    "content_block_start",
                    [
                        "type": "content_block_start", "index": .int(Int64(index)),
                        "content_block": [
                            "type": "tool_use", "id": .string("toolu_" + call.id), "name": .string(call.name), "input": [:],
                        ],
                    ]))
            for piece in [""] + TokenPieces.split(call.arguments) {
                events.append(
                    Self.event(
                        "content_block_delta",
                        [
                            "type": "content_block_delta", "index": .int(Int64(index)),
                            "delta": ["type": "input_json_delta", "partial_json": .string(piece)],
                        ]))
            }
            events.append(Self.event("content_block_stop", ["type": "content_block_stop", "index": .int(Int64(index))]))
        }
        events.append(
            Self.event(
                "message_delta",
                [
                    "type": "message_delta",
                    "delta": ["stop_reason": .string(Self.stopReason(completion)), "stop_sequence": nil],
                    "usage": ["output_tokens": .int(Int64(completion.completionTokens))],
                ]))
        events.append(Self.event("message_stop", ["type": "message_stop"]))
        return events
    }
}

/// Google Gemini `generateContent` / `streamGenerateContent?alt=sse`.
struct GeminiPersonality: Personality {
    func streamError() -> ByteBuffer {
        Self.data([
            "error": ["code": 503, "message": "The model is overloaded. Please try again later. (simulated)", "status": "UNAVAILABLE"]
        ])
    }

    func contextLengthError(promptTokens: Int) -> JSONValue {
        [
            "error": [
                "code": 400, "status": "INVALID_ARGUMENT",
                "message": .string(
                    "The input token count (\(promptTokens + 1048576)) exceeds the maximum number of tokens allowed (1048576)."),
            ]
        ]
    }

    /// The REST API takes camelCase and snake_case field names alike (the Python SDK mixes them).
    static func field(_ value: JSONValue?, _ camel: String) -> JSONValue? {
        if let found = value?[camel] { return found }
        var snake = ""
        for character in camel {
            if character.isUppercase { snake += "_" + character.lowercased() } else { snake.append(character) }
        }
        return value?[snake]
    }

    func read(_ body: JSONValue, pathModel: String?, pathStream: Bool) -> (request: SimulatedRequest, stream: Bool, includeUsage: Bool) {
        let contents = body["contents"]?.arrayValue ?? []
        var prompt = (Self.field(body, "systemInstruction")?["parts"]?.arrayValue ?? []).compactMap { $0["text"]?.stringValue }.joined()
        for content in contents {
            prompt +=
                "\n" + (content["role"]?.stringValue ?? "user") + ":"
                + (content["parts"]?.arrayValue ?? []).map { $0["text"]?.stringValue ?? "[part]" }.joined()
        }
        let declarations = (body["tools"]?.arrayValue ?? []).flatMap { Self.field($0, "functionDeclarations")?.arrayValue ?? [] }
        let tools: [(name: String, schema: JSONValue)] = declarations.compactMap { declaration in
            guard let name = declaration["name"]?.stringValue else { return nil }
            return (name, Self.field(declaration, "parametersJsonSchema") ?? declaration["parameters"] ?? ["type": "object"])
        }
        var forced: String?
        let calling = Self.field(Self.field(body, "toolConfig"), "functionCallingConfig")
        if calling?["mode"] == "ANY" {
            forced = Self.field(calling, "allowedFunctionNames")?.arrayValue?.first?.stringValue ?? tools.first?.name
        }
        let generation = Self.field(body, "generationConfig")
        let thinking = Self.field(generation, "thinkingConfig")
        var request = SimulatedRequest(
            model: pathModel ?? "", promptText: prompt, messageCount: contents.count,
            maxTokens: Self.field(generation, "maxOutputTokens")?.intValue, tools: tools, forcedTool: forced,
            wantsJSON: Self.field(generation, "responseMimeType") == "application/json",
            jsonSchema: Self.field(generation, "responseJsonSchema") ?? Self.field(generation, "responseSchema"))
        request.reasons = (Self.field(thinking, "thinkingBudget")?.intValue ?? 0) > 0
        let history = contents.dropLast().map { (Self.field($0, "parts")?.arrayValue ?? []).map { $0["text"]?.stringValue ?? "" }.joined() }
            .joined(separator: "\n")
        request.cachePrefix = SimulatedModel.automaticCachePrefix(history: history, promptTokens: SimulatedModel.countTokens(prompt))
        request.showsReasoning = Self.field(thinking, "includeThoughts")?.boolValue ?? false
        // Thoughts are always counted; they are returned only with includeThoughts.
        return (request, pathStream, true)
    }

    func error(status: Int) -> (status: Int, body: JSONValue, headers: [(String, String)]) {
        // An invalid key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID, as Google sends it.
        if status == 401 {
            return (
                400,
                [
                    "error": [
                        "code": 400, "message": "API key not valid. Please pass a valid API key. (simulated)",
                        "status": "INVALID_ARGUMENT",
                        "details": [
                            [
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com",
                            ]
                        ],
                    ]
                ], []
            )
        }
        let (rpc, message): (String, String) =
            switch status {
            case 400: ("INVALID_ARGUMENT", "Request contains an invalid argument. (simulated)")
            case 403: ("PERMISSION_DENIED", "The caller does not have permission (simulated)")
            case 404: ("NOT_FOUND", "models/x is not found (simulated)")
            case 429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota (simulated)")
            case 503: ("UNAVAILABLE", "The model is overloaded. Please try again later. (simulated)")
            case 504: ("DEADLINE_EXCEEDED", "Deadline exceeded (simulated)")
            default: ("INTERNAL", "An internal error has occurred. (simulated)")
            }
        var error: JSONObject = ["code": .int(Int64(status)), "message": .string(message), "status": .string(rpc)]
        if status == 429 {
            error["details"] = [["@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"]]
        }
        return (status, ["error": .object(error)], [])
    }

    func usage(_ completion: SimulatedModel.Completion, output: Int) -> JSONValue {
        // candidatesTokenCount excludes thoughts, which Gemini reports apart.
        let thoughts = completion.reasoning.count
        var usage: JSONObject = [
            "promptTokenCount": .int(Int64(completion.reportedPromptTokens)),
            "candidatesTokenCount": .int(Int64(max(output - thoughts, 0))),
            "totalTokenCount": .int(Int64(completion.reportedPromptTokens + output)),
        ]
        if thoughts > 0 { usage["thoughtsTokenCount"] = .int(Int64(thoughts)) }
        if completion.cacheRead > 0 { usage["cachedContentTokenCount"] = .int(Int64(completion.cacheRead)) }
        return .object(usage)
    }

    func candidate(parts: [JSONValue], finish: String?) -> JSONValue {
        var candidate: JSONObject = ["content": ["parts": .array(parts), "role": "model"], "index": 0]
        if let finish { candidate["finishReason"] = .string(finish) }
        return .object(candidate)
    }

    static func finishReason(_ completion: SimulatedModel.Completion) -> String {
        completion.finishReason == "length" ? "MAX_TOKENS" : "STOP"
    }

    func callPart(_ completion: SimulatedModel.Completion) -> [JSONValue] {
        guard let call = completion.toolCall else { return [] }
        let args = (try? JSONParser.parse(call.arguments)) ?? [:]
        return [["functionCall": ["name": .string(call.name), "args": args]]]
    }

    func thoughtPart(_ completion: SimulatedModel.Completion) -> [JSONValue] {
        completion.reasoning.isEmpty || !completion.showsReasoning
            ? [] : [["text": .string(completion.reasoning.joined()), "thought": true]]
    }

    func response(_ completion: SimulatedModel.Completion, model: String, id: String) -> JSONValue {
        let parts: [JSONValue] =
            thoughtPart(completion) + (completion.tokens.isEmpty ? [] : [["text": .string(completion.text)]]) + callPart(completion)
        return [
            "candidates": [candidate(parts: parts, finish: Self.finishReason(completion))],
            "usageMetadata": usage(completion, output: completion.completionTokens),
            "modelVersion": .string(model), "responseId": .string(id),
        ]
    }

    func events(_ completion: SimulatedModel.Completion, model: String, id: String, includeUsage: Bool) -> [ByteBuffer] {
        // Gemini sends text a few tokens at a time and a function call whole; there is no [DONE].
        var groups: [[String]] = stride(from: 0, to: completion.tokens.count, by: 3).map {
            Array(completion.tokens[$0..<min($0 + 3, completion.tokens.count)])
        }
        if groups.isEmpty { groups = [[]] }
        var produced = 0
        return groups.enumerated().map { index, group in
            produced += group.count + (index == 0 ? completion.reasoning.count : 0)
            let last = index == groups.count - 1
            var parts: [JSONValue] =
                (index == 0 ? thoughtPart(completion) : []) + (group.isEmpty ? [] : [["text": .string(group.joined())]])
            if last { parts += callPart(completion) }
            return ByteBuffer(
                string: "data: "
                    + JSONWriter.string([
                        "candidates": [candidate(parts: parts, finish: last ? Self.finishReason(completion) : nil)],
                        "usageMetadata": usage(completion, output: last ? completion.completionTokens : produced),
                        "modelVersion": .string(model), "responseId": .string(id),
                    ]) + "\r\n\r\n")
        }
    }
}
