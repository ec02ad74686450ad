import Foundation
import NIOCore
import SignalboxCore

/// The Google Gemini wire format (`models/{model}:streamGenerateContent?alt=sse`, `x-goog-api-key`).
///
/// Gemini has no tool-call ids: the adapter makes them up on the way out and, on the way in,
/// finds a tool result's function name through the id of the call it answers.
public struct GeminiAdapter: ProviderAdapter {
    public init() {}

    public func makeRequest(_ request: ChatRequest, attempt: PlannedAttempt, apiKey: String?) -> UpstreamRequest {
        let source = request.parsedBody()
        var body = JSONObject()
        let (system, contents) = Self.translateMessages(source["messages"]?.arrayValue ?? [])
        if !system.isEmpty { body["systemInstruction"] = ["parts": .array(system)] }
        body["contents"] = .array(contents)
        let dropped = Set(unsupportedParameters(request, attempt.endpoint))

        var generation = JSONObject()
        // The reservation covers `completionLimit` tokens per candidate: the upstream is told so.
        generation["maxOutputTokens"] = .int(Int64(attempt.completionLimit(for: request)))
        let mapping: [(String, String)] = [
            ("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
            ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"), ("n", "candidateCount"),
        ]
        for (openAI, gemini) in mapping {
            if let value = source[openAI], !value.isNull, !dropped.contains(openAI) { generation[gemini] = value }
        }
        switch source["stop"] {
        case .string(let stop)?: generation["stopSequences"] = [.string(stop)]
        case .array(let stops)?: generation["stopSequences"] = .array(stops)
        default: break
        }
        if let format = source["response_format"], !dropped.contains("response_format") {
            switch format["type"]?.stringValue {
            case "json_object":
                generation["responseMimeType"] = "application/json"
            case "json_schema":
                generation["responseMimeType"] = "application/json"
                if let schema = format["json_schema"]?["schema"] { generation["responseJsonSchema"] = schema }
            default: break
            }
        }
        if let reasoning = request.reasoning, !dropped.contains("reasoning") {
            let limit = request.maxTokens ?? attempt.endpoint.maxOutputTokens
            generation["thinkingConfig"] = [
                "thinkingBudget": .int(Int64(reasoning.budget(outputLimit: limit) ?? 0)),
                "includeThoughts": .bool(reasoning.enabled && !reasoning.exclude),
            ]
        }
        if !generation.isEmpty { body["generationConfig"] = .object(generation) }

        if let tools = source["tools"]?.arrayValue, !tools.isEmpty, !dropped.contains("tools") {
            body["tools"] = [
                [
                    "functionDeclarations": .array(
                        tools.compactMap { tool in
                            guard let function = tool["function"] else { return nil }
                            var declaration: JSONObject = ["name": function["name"] ?? "tool"]
                            if let description = function["description"] { declaration["description"] = description }
                            if let parameters = function["parameters"] { declaration["parametersJsonSchema"] = parameters }
                            return .object(declaration)
                        })
                ]
            ]
            switch source["tool_choice"] {
            case .string("none")?: body["toolConfig"] = ["functionCallingConfig": ["mode": "NONE"]]
            case .string("required")?: body["toolConfig"] = ["functionCallingConfig": ["mode": "ANY"]]
            case .object(let choice)?:
                if let name = choice["function"]?["name"] {
                    body["toolConfig"] = ["functionCallingConfig": ["mode": "ANY", "allowedFunctionNames": [name]]]
                }
            default: break
            }
        }

        var headers = [("content-type", "application/json"), ("accept", "text/event-stream")]
        if let apiKey { headers.append(("x-goog-api-key", apiKey)) }
        let model =
            attempt.endpoint.upstreamModel.hasPrefix("models/")
            ? attempt.endpoint.upstreamModel : "models/" + attempt.endpoint.upstreamModel
        return UpstreamRequest(
            url: url(attempt, "/\(model):streamGenerateContent?alt=sse"), headers: headers,
            body: ByteBuffer(bytes: JSONWriter.bytes(.object(body))))
    }

    static func parts(_ content: JSONValue?) -> [JSONValue] {
        switch content {
        case .string(let text)?: return text.isEmpty ? [] : [["text": .string(text)]]
        case .array(let items)?:
            return items.compactMap { part in
                switch part["type"]?.stringValue {
                case "text":
                    guard let text = part["text"]?.stringValue, !text.isEmpty else { return nil }
                    return ["text": .string(text)]
                case "image_url":
                    guard let url = part["image_url"]?["url"]?.stringValue ?? part["image_url"]?.stringValue else { return nil }
                    if let (mediaType, data) = DataURL.split(url) {
                        return ["inlineData": ["mimeType": .string(mediaType), "data": .string(data)]]
                    }
                    return ["fileData": ["mimeType": .string(mimeType(for: url)), "fileUri": .string(url)]]
                case "file":
                    // A file part (a PDF, as data or a URL) is inline data or a file reference.
                    let file = part["file"]
                    if let data = file?["file_data"]?.stringValue, let (mediaType, content) = DataURL.split(data) {
                        return ["inlineData": ["mimeType": .string(mediaType), "data": .string(content)]]
                    }
                    if let url = file?["file_url"]?.stringValue ?? file?["url"]?.stringValue ?? file?["file_data"]?.stringValue {
                        return ["fileData": ["mimeType": "application/pdf", "fileUri": .string(url)]]
                    }
                    return nil
                default: return nil
                }
            }
        default: return []
        }
    }

    static func mimeType(for url: String) -> String {
        let lower = url.lowercased()
        if lower.hasSuffix(".png") { return "image/png" }
        if lower.hasSuffix(".webp") { return "image/webp" }
        if lower.hasSuffix(".gif") { return "image/gif" }
        if lower.hasSuffix(".pdf") { return "application/pdf" }
        return "image/jpeg"
    }

    /// OpenAI messages as Gemini `systemInstruction` parts and alternating user/model contents.
    static func translateMessages(_ messages: [JSONValue]) -> (system: [JSONValue], contents: [JSONValue]) {
        var system: [JSONValue] = []
        var conversation = AlternatingTurns()
        var toolNames: [String: String] = [:]
        for message in messages {
            switch message["role"]?.stringValue ?? "user" {
            case "system", "developer":
                system += parts(message["content"])
            case "assistant":
                var content = parts(message["content"])
                for call in message["tool_calls"]?.arrayValue ?? [] {
                    let name = call["function"]?["name"]?.stringValue ?? "tool"
                    if let id = call["id"]?.stringValue { toolNames[id] = name }
                    let args = ToolArguments.object(call["function"]?["arguments"]?.stringValue)
                    content.append(["functionCall": ["name": .string(name), "args": args]])
                }
                conversation.append("model", content)
            case "tool", "function":
                let id = message["tool_call_id"]?.stringValue ?? ""
                let name = toolNames[id] ?? message["name"]?.stringValue ?? "tool"
                let text: String =
                    switch message["content"] {
                    case .string(let value)?: value
                    case .array(let items)?: items.compactMap { $0["text"]?.stringValue }.joined()
                    default: ""
                    }
                let parsed = try? JSONParser.parse(text)
                let response: JSONValue = parsed?.objectValue != nil ? parsed! : ["content": .string(text)]
                conversation.append("user", [["functionResponse": ["name": .string(name), "response": response]]])
            default:
                conversation.append("user", parts(message["content"]))
            }
        }
        var contents = conversation.turns
        if contents.isEmpty { contents.append(("user", [["text": " "]])) }
        return (system, contents.map { ["role": .string($0.role), "parts": .array($0.items)] })
    }

    public func makeDecoder(for request: ChatRequest) -> GeminiStreamDecoder {
        GeminiStreamDecoder(excludeReasoning: request.reasoning?.exclude ?? false)
    }

    public func failure(status: Int, body: ByteBuffer, retryAfter: Int?) -> UpstreamFailure {
        let raw = String(buffer: body)
        let parsed = try? JSONParser.parse(raw)
        let message = parsed?["error"]?["message"]?.stringValue ?? "Provider returned error"
        var delay = retryAfter
        for detail in parsed?["error"]?["details"]?.arrayValue ?? [] {
            if let text = detail["retryDelay"]?.stringValue, text.hasSuffix("s"), let seconds = Double(text.dropLast()) {
                delay = Int(seconds.rounded(.up))
            }
        }
        // Gemini reports an invalid key as 400 INVALID_ARGUMENT; it is our credential, not the request.
        let invalidKey = parsed?["error"]?["details"]?.arrayValue?.contains { $0["reason"] == "API_KEY_INVALID" } == true
        return UpstreamFailure(.status(invalidKey ? 401 : status), message, raw: raw, retryAfter: delay)
    }
}

/// Reads Gemini's SSE chunks (each a whole `GenerateContentResponse` delta) into OpenAI deltas.
public struct GeminiStreamDecoder: StreamDecoder {
    /// Leave thought text out of the deltas (`reasoning.exclude`).
    let excludeReasoning: Bool
    var started = false
    var toolCalls = 0
    var responseID: String?

    public init(excludeReasoning: Bool = false) { self.excludeReasoning = excludeReasoning }

    public mutating func decode(_ event: SSEEvent) throws(UpstreamFailure) -> [AdapterEvent] {
        guard let json = try? JSONParser.parse(event.data), json.objectValue != nil else {
            throw UpstreamFailure(.malformed, "Provider sent an event that is not JSON", raw: String(event.data.prefix(2048)))
        }
        if let error = json["error"], !error.isNull {
            throw UpstreamFailure(.streamError, error["message"]?.stringValue ?? "Provider returned an error mid-stream", raw: event.data)
        }
        if responseID == nil { responseID = json["responseId"]?.stringValue }
        var events: [AdapterEvent] = []
        var delta = JSONObject()
        if !started {
            delta["role"] = "assistant"
            started = true
        }
        let candidate = json["candidates"]?.arrayValue?.first
        var text = ""
        var reasoning = ""
        var calls: [JSONValue] = []
        for part in candidate?["content"]?["parts"]?.arrayValue ?? [] {
            if let call = part["functionCall"] {
                let arguments = JSONWriter.string(call["args"] ?? [:])
                calls.append([
                    "index": .int(Int64(toolCalls)), "id": .string("call_\(responseID ?? "gemini")_\(toolCalls)"), "type": "function",
                    "function": ["name": call["name"] ?? "tool", "arguments": .string(arguments)],
                ])
                toolCalls += 1
            } else if let value = part["text"]?.stringValue {
                if part["thought"]?.boolValue == true { reasoning += value } else { text += value }
            }
        }
        if !text.isEmpty || delta["role"] != nil { delta["content"] = .string(text) }
        if !reasoning.isEmpty && !excludeReasoning { delta["reasoning"] = .string(reasoning) }
        if !calls.isEmpty { delta["tool_calls"] = .array(calls) }
        let native =
            candidate?["finishReason"]?.stringValue
            ?? json["promptFeedback"]?["blockReason"]?.stringValue.map { _ in "SAFETY" }
        var finish = FinishReason.normalize(native)
        if finish == "stop" && toolCalls > 0 { finish = "tool_calls" }
        if !delta.isEmpty || native != nil {
            var choice: JSONObject = ["index": 0, "delta": .object(delta), "logprobs": nil]
            choice["finish_reason"] = finish.map { .string($0) } ?? .null
            choice["native_finish_reason"] = native.map { .string($0) } ?? .null
            events.append(.delta(CompletionDelta(choices: [.object(choice)], upstreamID: responseID)))
        }
        if let metadata = json["usageMetadata"] {
            let thoughts = TokenUsage.count(metadata["thoughtsTokenCount"])
            events.append(
                .usage(
                    TokenUsage(
                        promptTokens: TokenUsage.count(metadata["promptTokenCount"])
                            + TokenUsage.count(metadata["toolUsePromptTokenCount"]),
                        completionTokens: TokenUsage.count(metadata["candidatesTokenCount"]) + thoughts,
                        cachedTokens: TokenUsage.count(metadata["cachedContentTokenCount"]),
                        reasoningTokens: thoughts)))
        }
        if native != nil { events.append(.done) }
        return events
    }
}
