import Foundation
import NIOCore
import SignalboxCore

/// The Anthropic Messages wire format (`POST /v1/messages`, `x-api-key`, `anthropic-version`).
///
/// Translates an OpenAI-style request into a Messages request (system prompts hoisted, roles
/// merged into alternating turns, tool calls and results as content blocks, `max_tokens` always
/// set) and the Messages event stream back into OpenAI deltas.
public struct AnthropicAdapter: ProviderAdapter {
    public static let version = "2023-06-01"

    public init() {}

    public func makeRequest(_ request: ChatRequest, attempt: PlannedAttempt, apiKey: String?) -> UpstreamRequest {
        if let native = request.native, native.format == .anthropic {
            return nativeRequest(native, request, attempt: attempt, apiKey: apiKey)
        }
        let source = request.parsedBody()
        var body = JSONObject()
        body["model"] = .string(attempt.endpoint.upstreamModel)
        body["max_tokens"] = .int(Int64(attempt.completionLimit(for: request)))
        let (system, messages) = Self.translateMessages(source["messages"]?.arrayValue ?? [])
        if !system.isEmpty { body["system"] = .array(system) }
        body["messages"] = .array(messages)
        let dropped = Set(unsupportedParameters(request, attempt.endpoint))
        if let temperature = source["temperature"], !dropped.contains("temperature"),
            let value = temperature.decimalText.flatMap(Double.init)
        {
            body["temperature"] = .double(min(max(value, 0), 1))
        }
        if let topP = source["top_p"], !topP.isNull, !dropped.contains("top_p") { body["top_p"] = topP }
        if let topK = source["top_k"], !topK.isNull, !dropped.contains("top_k") { body["top_k"] = topK }
        switch source["stop"] {
        case .string(let stop)?: body["stop_sequences"] = [.string(stop)]
        case .array(let stops)?: body["stop_sequences"] = .array(stops)
        default: break
        }
        if let user = source["user"]?.stringValue { body["metadata"] = ["user_id": .string(user)] }
        if let tools = source["tools"]?.arrayValue, !tools.isEmpty, !dropped.contains("tools") {
            body["tools"] = .array(
                tools.compactMap { tool in
                    guard let function = tool["function"] else { return nil }
                    var converted: JSONObject = ["name": function["name"] ?? "tool"]
                    if let description = function["description"] { converted["description"] = description }
                    converted["input_schema"] = function["parameters"] ?? ["type": "object", "properties": [:]]
                    return .object(converted)
                })
            if let choice = Self.toolChoice(source["tool_choice"], parallel: source["parallel_tool_calls"]?.boolValue) {
                body["tool_choice"] = choice
            }
        }
        if let budget = request.reasoning?.budget(outputLimit: attempt.completionLimit(for: request)), !dropped.contains("reasoning") {
            // Extended thinking fixes temperature at 1 and allows no top_k.
            body["thinking"] = ["type": "enabled", "budget_tokens": .int(Int64(budget))]
            body["temperature"] = nil
            body["top_k"] = nil
            if let topP = body["top_p"]?.decimalText.flatMap(Double.init), topP < 0.95 { body["top_p"] = nil }
        }
        if Self.emulatesJSON(responseFormat: source["response_format"], tools: source["tools"]) && !dropped.contains("response_format") {
            let schema = source["response_format"]?["json_schema"]?["schema"] ?? ["type": "object"]
            body["tools"] = [["name": .string(Self.jsonTool), "description": "Respond with the requested JSON.", "input_schema": schema]]
            body["tool_choice"] = ["type": "tool", "name": .string(Self.jsonTool)]
        }
        body["stream"] = true

        var headers = [
            ("content-type", "application/json"), ("accept", "text/event-stream"),
            ("anthropic-version", Self.version),
        ]
        if let apiKey { headers.append(("x-api-key", apiKey)) }
        return UpstreamRequest(url: url(attempt, "/messages"), headers: headers, body: ByteBuffer(bytes: JSONWriter.bytes(.object(body))))
    }

    /// A Messages request the client wrote, passed through: thinking blocks and their signatures,
    /// `cache_control`, documents and every field Anthropic knows reach it as sent. The router
    /// changes only what it owns: the model, `max_tokens` (what the reservation covers), streaming,
    /// and its own fields, which it removes.
    func nativeRequest(_ native: ChatRequest.NativeBody, _ request: ChatRequest, attempt: PlannedAttempt, apiKey: String?)
        -> UpstreamRequest
    {
        var body = native.body
        for field in ChatRequest.Field.allCases where field.isRouterOnly { body[field.name] = nil }
        body["model"] = .string(attempt.endpoint.upstreamModel)
        body["max_tokens"] = .int(Int64(attempt.completionLimit(for: request)))
        body["stream"] = true
        var headers = [
            ("content-type", "application/json"), ("accept", "text/event-stream"), ("anthropic-version", Self.version),
        ]
        headers += native.headers
        if let apiKey { headers.append(("x-api-key", apiKey)) }
        return UpstreamRequest(url: url(attempt, "/messages"), headers: headers, body: ByteBuffer(bytes: JSONWriter.bytes(.object(body))))
    }

    static func toolChoice(_ choice: JSONValue?, parallel: Bool?) -> JSONValue? {
        var result: JSONObject
        switch choice {
        case .string("none")?: result = ["type": "none"]
        case .string("required")?: result = ["type": "any"]
        case .string("auto")?, nil: result = ["type": "auto"]
        case .object(let object)?:
            guard let name = object["function"]?["name"]?.stringValue else { return nil }
            result = ["type": "tool", "name": .string(name)]
        default: return nil
        }
        if parallel == false { result["disable_parallel_tool_use"] = true }
        return .object(result)
    }

    /// OpenAI content (a string or parts) as Anthropic content blocks.
    static func blocks(_ content: JSONValue?) -> [JSONValue] {
        switch content {
        case .string(let text)?: return text.isEmpty ? [] : [["type": "text", "text": .string(text)]]
        case .array(let parts)?:
            return parts.compactMap { part in
                switch part["type"]?.stringValue {
                case "text":
                    guard let text = part["text"]?.stringValue, !text.isEmpty else { return nil }
                    var block: JSONObject = ["type": "text", "text": .string(text)]
                    if let cache = part["cache_control"] { block["cache_control"] = cache }
                    return .object(block)
                case "image_url":
                    guard let url = part["image_url"]?["url"]?.stringValue ?? part["image_url"]?.stringValue else { return nil }
                    if let (mediaType, data) = DataURL.split(url) {
                        return ["type": "image", "source": ["type": "base64", "media_type": .string(mediaType), "data": .string(data)]]
                    }
                    return ["type": "image", "source": ["type": "url", "url": .string(url)]]
                case "file":
                    // OpenAI's file part (a PDF, as data or a URL) is Anthropic's document block.
                    let file = part["file"]
                    if let data = file?["file_data"]?.stringValue, let (mediaType, content) = DataURL.split(data) {
                        return [
                            "type": "document", "source": ["type": "base64", "media_type": .string(mediaType), "data": .string(content)],
                        ]
                    }
                    if let url = file?["file_url"]?.stringValue ?? file?["url"]?.stringValue ?? file?["file_data"]?.stringValue {
                        return ["type": "document", "source": ["type": "url", "url": .string(url)]]
                    }
                    return nil
                default:
                    return nil
                }
            }
        default: return []
        }
    }

    /// Splits OpenAI messages into Anthropic's `system` blocks and alternating user/assistant turns.
    static func translateMessages(_ messages: [JSONValue]) -> (system: [JSONValue], messages: [JSONValue]) {
        var system: [JSONValue] = []
        var conversation = AlternatingTurns()
        for message in messages {
            let role = message["role"]?.stringValue ?? "user"
            switch role {
            case "system", "developer":
                system += blocks(message["content"])
            case "assistant":
                var content = blocks(message["content"])
                for call in message["tool_calls"]?.arrayValue ?? [] {
                    let input = ToolArguments.object(call["function"]?["arguments"]?.stringValue)
                    content.append([
                        "type": "tool_use", "id": .string(sanitizeID(call["id"]?.stringValue ?? "call")),
                        "name": call["function"]?["name"] ?? "tool", "input": input,
                    ])
                }
                conversation.append("assistant", content)
            case "tool", "function":
                var result: JSONObject = [
                    "type": "tool_result", "tool_use_id": .string(sanitizeID(message["tool_call_id"]?.stringValue ?? "call")),
                ]
                switch message["content"] {
                case .string(let text)?: result["content"] = .string(text)
                case .array?: result["content"] = .array(blocks(message["content"]))
                default: result["content"] = ""
                }
                // tool results lead their user turn
                if let last = conversation.turns.last, last.role == "user" {
                    let firstText = last.items.firstIndex { $0["type"] != "tool_result" } ?? last.items.count
                    conversation.turns[conversation.turns.count - 1].items.insert(.object(result), at: firstText)
                } else {
                    conversation.append("user", [.object(result)])
                }
            default:
                conversation.append("user", blocks(message["content"]))
            }
        }
        var turns = conversation.turns
        if turns.first?.role == "assistant" { turns.insert(("user", [["type": "text", "text": "…"]]), at: 0) }
        if turns.isEmpty { turns.append(("user", [["type": "text", "text": "…"]])) }
        return (system, turns.map { ["role": .string($0.role), "content": .array($0.items)] })
    }

    /// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; ids from other providers may not.
    static func sanitizeID(_ id: String) -> String {
        let cleaned = String(
            id.unicodeScalars.map { scalar -> Character in
                CharacterSet.alphanumerics.contains(scalar) && scalar.isASCII || scalar == "_" || scalar == "-" ? Character(scalar) : "_"
            })
        return cleaned.isEmpty ? "call" : cleaned
    }

    public func makeDecoder(for request: ChatRequest) -> AnthropicStreamDecoder {
        AnthropicStreamDecoder(
            jsonTool: Self.emulatesJSON(responseFormat: request.field(.responseFormat), tools: request.field(.tools))
                ? Self.jsonTool : nil,
            excludeReasoning: request.reasoning?.exclude ?? false)
    }

    /// Anthropic's Messages API has no JSON mode: JSON output is asked for as a forced call of
    /// this tool, whose input schema is the requested schema, and its input becomes the answer.
    public static let jsonTool = "json_output"

    static func emulatesJSON(responseFormat: JSONValue?, tools: JSONValue?) -> Bool {
        let type = responseFormat?["type"]?.stringValue
        return (type == "json_object" || type == "json_schema") && (tools?.arrayValue ?? []).isEmpty
    }

    public func failure(status: Int, body: ByteBuffer, retryAfter: Int?) -> UpstreamFailure {
        let raw = String(buffer: body)
        let parsed = try? JSONParser.parse(raw)
        let message = parsed?["error"]?["message"]?.stringValue ?? "Provider returned error"
        return UpstreamFailure(.status(status), message, raw: raw, retryAfter: retryAfter)
    }
}

/// Reads Anthropic's named stream events into OpenAI deltas.
///
/// Tool calls get OpenAI indexes counted per message (Anthropic's block indexes also count text
/// blocks); usage combines `message_start` (input side) with the cumulative `message_delta` counts.
public struct AnthropicStreamDecoder: StreamDecoder {
    /// The tool that stands in for JSON mode: its input is streamed as content.
    let jsonTool: String?
    /// Leave thinking text out of the deltas (`reasoning.exclude`).
    let excludeReasoning: Bool
    var jsonBlock: Int?
    var messageID: String?
    var toolIndexByBlock: [Int: Int] = [:]
    var nextToolIndex = 0
    var usage = TokenUsage()

    public init(jsonTool: String? = nil, excludeReasoning: Bool = false) {
        self.jsonTool = jsonTool
        self.excludeReasoning = excludeReasoning
    }

    func delta(_ delta: JSONObject, finish: String? = nil, native: String? = nil) -> AdapterEvent {
        var choice: JSONObject = ["index": 0, "delta": .object(delta), "logprobs": nil]
        choice["finish_reason"] = finish.map { .string($0) } ?? .null
        choice["native_finish_reason"] = native.map { .string($0) } ?? .null
        return .delta(CompletionDelta(choices: [.object(choice)], upstreamID: messageID))
    }

    public mutating func decode(_ event: SSEEvent) throws(UpstreamFailure) -> [AdapterEvent] {
        guard let json = try? JSONParser.parse(event.data) else {
            throw UpstreamFailure(.malformed, "Provider sent an event that is not JSON", raw: String(event.data.prefix(2048)))
        }
        let type = json["type"]?.stringValue ?? event.event ?? ""
        switch type {
        case "message_start":
            messageID = json["message"]?["id"]?.stringValue
            let start = json["message"]?["usage"]
            let input = TokenUsage.count(start?["input_tokens"])
            let cacheRead = TokenUsage.count(start?["cache_read_input_tokens"])
            let cacheWrite = TokenUsage.count(start?["cache_creation_input_tokens"])
            usage.promptTokens = input + cacheRead + cacheWrite
            usage.cachedTokens = cacheRead
            usage.cacheWriteTokens = cacheWrite
            usage.completionTokens = TokenUsage.count(start?["output_tokens"])
            return [delta(["role": "assistant", "content": ""])]
        case "content_block_start":
            let block = json["content_block"]
            let index = json["index"]?.intValue ?? 0
            if block?["type"] == "tool_use", let jsonTool, block?["name"]?.stringValue == jsonTool {
                jsonBlock = index
                return []
            }
            if block?["type"] == "tool_use" {
                let toolIndex = nextToolIndex
                nextToolIndex += 1
                toolIndexByBlock[index] = toolIndex
                return [
                    delta([
                        "tool_calls": [
                            [
                                "index": .int(Int64(toolIndex)), "id": block?["id"] ?? "call", "type": "function",
                                "function": ["name": block?["name"] ?? "tool", "arguments": ""],
                            ]
                        ]
                    ])
                ]
            }
            if block?["type"] == "redacted_thinking", let data = block?["data"] {
                return [delta(["reasoning_details": [Self.detail("reasoning.encrypted", index: index, ["data": data])]])]
            }
            if let text = block?["text"]?.stringValue, !text.isEmpty { return [delta(["content": .string(text)])] }
            return []
        case "content_block_delta":
            let body = json["delta"]
            switch body?["type"]?.stringValue {
            case "text_delta": return [delta(["content": body?["text"] ?? ""])]
            case "thinking_delta":
                // The text also goes by block (its `index`), so each signed block keeps its own.
                guard !excludeReasoning else { return [] }
                let thinking = body?["thinking"] ?? ""
                let detail = Self.detail("reasoning.text", index: json["index"]?.intValue ?? 0, ["text": thinking])
                return [delta(["reasoning": thinking, "reasoning_details": [detail]])]
            case "signature_delta":
                // What lets a client send the thinking back to Anthropic in a later turn.
                let index = json["index"]?.intValue ?? 0
                return [
                    delta(["reasoning_details": [Self.detail("reasoning.text", index: index, ["signature": body?["signature"] ?? ""])]])
                ]
            case "input_json_delta" where json["index"]?.intValue == jsonBlock:
                return [delta(["content": body?["partial_json"] ?? ""])]
            case "input_json_delta":
                let toolIndex = toolIndexByBlock[json["index"]?.intValue ?? 0] ?? 0
                return [delta(["tool_calls": [["index": .int(Int64(toolIndex)), "function": ["arguments": body?["partial_json"] ?? ""]]]])]
            default: return []
            }
        case "message_delta":
            if let output = json["usage"]?["output_tokens"], !output.isNull { usage.completionTokens = TokenUsage.count(output) }
            if case let input = TokenUsage.count(json["usage"]?["input_tokens"]), input > 0 {
                usage.promptTokens = input + usage.cachedTokens + usage.cacheWriteTokens
            }
            guard let native = json["delta"]?["stop_reason"]?.stringValue else { return [] }
            var finish = native == "model_context_window_exceeded" ? "length" : FinishReason.normalize(native)
            if jsonBlock != nil && native == "tool_use" { finish = "stop" }
            return [delta([:], finish: finish, native: native)]
        case "message_stop":
            return [.usage(usage), .done]
        case "error":
            let kind = json["error"]?["type"]?.stringValue ?? "error"
            throw UpstreamFailure(.streamError, json["error"]?["message"]?.stringValue ?? kind, raw: event.data)
        default:
            return []  // ping, content_block_stop, unknown future events
        }
    }
}

extension AnthropicStreamDecoder {
    /// One of OpenRouter's `reasoning_details` entries, in Anthropic's format.
    static func detail(_ type: String, index: Int, _ fields: JSONObject) -> JSONValue {
        var entry: JSONObject = ["type": .string(type), "format": "anthropic-claude-v1", "index": .int(Int64(index))]
        for (key, value) in fields { entry[key] = value }
        return .object(entry)
    }
}

/// `data:` URLs: `data:image/png;base64,AAAA` → (`image/png`, `AAAA`).
public enum DataURL {
    public static func split(_ url: String) -> (mediaType: String, data: String)? {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else { return nil }
        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
        guard header.hasSuffix(";base64") else { return nil }
        return (String(header.dropLast(7)), String(url[url.index(after: comma)...]))
    }
}
