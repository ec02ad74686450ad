import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Providers
import SignalboxCore

/// `POST /api/v1/messages`: Anthropic's Messages API, as Claude Code and the Anthropic SDKs speak
/// it (`ANTHROPIC_BASE_URL=https://host/api`). A Messages request becomes a chat request — system
/// prompt, content blocks, tool use and results, images, documents, thinking — and the chat
/// answer becomes a Messages answer or Anthropic's event stream, whatever upstream served it.
struct AnthropicMessagesSurface: ChatSurface {
    let catalog: Catalog

    static let betaHeader = HTTPField.Name("anthropic-beta")!

    /// The chat request for a Messages body, carrying the body itself for Anthropic upstreams.
    /// The prompt bound also counts what only they are sent (thinking blocks sent back, media
    /// inside tool results), so the reservation covers what Anthropic bills either way.
    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest {
        let source = try Self.object(body)
        var nativeOnly = PromptBound()
        var chat = try ChatRequest(json: .object(try chatBody(from: source, nativeOnly: &nativeOnly)))
        chat.prompt.textTokens += nativeOnly.textTokens
        chat.prompt.images += nativeOnly.images
        chat.prompt.files += nativeOnly.files
        var native = JSONObject()
        for (field, value) in source where Self.nativeFields.contains(field) { native[field] = Self.withoutCacheTTL(value) }
        let betas = headers[values: Self.betaHeader].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { beta in Self.passedBetas.contains { beta.hasPrefix($0) } }
        let beta = betas.isEmpty ? [] : [("anthropic-beta", betas.joined(separator: ","))]
        chat.native = ChatRequest.NativeBody(format: .anthropic, body: native, headers: beta)
        return chat
    }

    /// `value` with every `cache_control.ttl` removed: an hour's cache write costs twice the
    /// input price, above the catalog's cache-write price, so the pass-through asks for
    /// Anthropic's default five minutes.
    static func withoutCacheTTL(_ value: JSONValue) -> JSONValue {
        switch value {
        case .array(let items): return .array(items.map(withoutCacheTTL))
        case .object(var object):
            for (key, member) in object {
                if key == "cache_control", var control = member.objectValue {
                    control["ttl"] = nil
                    object[key] = .object(control)
                } else if case .array = member {
                    object[key] = withoutCacheTTL(member)
                } else if case .object = member, key == "content" || key == "source" {
                    object[key] = withoutCacheTTL(member)
                }
            }
            return .object(object)
        default: return value
        }
    }

    /// The Messages fields an Anthropic upstream is sent as the client wrote them. Others —
    /// `service_tier`, `mcp_servers`, `container`, … — change what Anthropic charges or runs
    /// beyond what the catalog prices and the reservation covers, so they are not passed on.
    static let nativeFields: Set<String> = [
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_k", "top_p",
        "tools", "tool_choice", "thinking",
    ]

    /// `anthropic-beta` features passed to Anthropic: those that change how an answer streams or
    /// what it may contain, not its price (a 1M-token context, for one, is billed at other rates).
    static let passedBetas = [
        "interleaved-thinking-", "fine-grained-tool-streaming-", "token-efficient-tools-", "claude-code-", "prompt-caching-",
        "pdfs-", "output-128k-",
    ]

    /// The chat body for a Messages body; also what `count_tokens` counts. `nativeOnly` gets
    /// the size of what the translation leaves out but an Anthropic upstream is sent.
    func chatBody(from source: JSONObject, forCounting: Bool = false, nativeOnly: inout PromptBound) throws -> JSONObject {
        guard let name = source["model"]?.stringValue, !name.isEmpty else { throw InvalidRequest("'model' is required") }
        guard let model = AnthropicModelNames.resolve(name, in: catalog) else {
            throw APIError.notFound("model: \(name) is not a model this router serves (see GET /api/v1/models)")
        }
        var chat: JSONObject = ["model": .string(model)]
        if !forCounting {
            guard let limit = source["max_tokens"], let count = limit.intValue, count >= 1 else {
                throw InvalidRequest("'max_tokens' is required: an integer ≥ 1")
            }
            chat["max_tokens"] = .int(Int64(count))
        }
        var messages: [JSONValue] = []
        switch source["system"] {
        case nil, .null?: break
        case .string(let text)?: messages.append(["role": "system", "content": .string(text)])
        case .array(let blocks)?:
            let text = try blocks.enumerated().map { index, block -> String in
                guard block["type"]?.stringValue == "text", let text = block["text"]?.stringValue else {
                    throw InvalidRequest("system[\(index)] must be a text block")
                }
                return text
            }
            messages.append(["role": "system", "content": .string(text.joined(separator: "\n\n"))])
        default: throw InvalidRequest("'system' must be a string or an array of text blocks")
        }
        guard let turns = source["messages"]?.arrayValue, !turns.isEmpty else {
            throw InvalidRequest("'messages' must be a non-empty array")
        }
        for (index, turn) in turns.enumerated() { messages += try Self.chatMessages(turn, index: index, nativeOnly: &nativeOnly) }
        chat["messages"] = .array(messages)

        if let tools = source["tools"], !tools.isNull {
            guard let list = tools.arrayValue else { throw InvalidRequest("'tools' must be an array") }
            chat["tools"] = .array(try list.enumerated().map(Self.chatTool))
        }
        if let choice = source["tool_choice"], !choice.isNull {
            let (tool, parallel) = try Self.chatToolChoice(choice)
            chat["tool_choice"] = tool
            if let parallel { chat["parallel_tool_calls"] = .bool(parallel) }
        }
        if let stops = source["stop_sequences"], !stops.isNull {
            guard let list = stops.arrayValue, list.allSatisfy({ $0.stringValue != nil }) else {
                throw InvalidRequest("'stop_sequences' must be an array of strings")
            }
            chat["stop"] = .array(list)
        }
        for field in ["temperature", "top_p", "top_k", "stream"] where source[field] != nil {
            chat[field] = source[field]
        }
        if let user = source["metadata"]?["user_id"], !user.isNull { chat["user"] = user }
        switch source["thinking"]?["type"]?.stringValue {
        case "enabled"?:
            guard let budget = source["thinking"]?["budget_tokens"]?.intValue, budget >= 1 else {
                throw InvalidRequest("'thinking.budget_tokens' must be an integer ≥ 1")
            }
            chat["reasoning"] = ["max_tokens": .int(Int64(budget))]
        case "disabled"?: chat["reasoning"] = ["enabled": false]
        case nil: break
        default: throw InvalidRequest("'thinking.type' must be \"enabled\" or \"disabled\"")
        }
        // The router's own fields mean on /messages what they mean on chat.
        for field in ChatRequest.Field.allCases where field.isRouterOnly {
            if let value = source[field.name] { chat[field.name] = value }
        }
        return chat
    }

    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue {
        let choice = completion["choices"]?.arrayValue?.first
        let message = choice?["message"]
        var content = Self.thinkingBlocks(reasoning: message?["reasoning"]?.stringValue, details: message?["reasoning_details"])
        if let text = message?["content"]?.stringValue, !text.isEmpty { content.append(["type": "text", "text": .string(text)]) }
        for call in message?["tool_calls"]?.arrayValue ?? [] {
            content.append([
                "type": "tool_use", "id": call["id"] ?? "", "name": call["function"]?["name"] ?? "",
                "input": Self.toolInput(call["function"]?["arguments"]?.stringValue),
            ])
        }
        return [
            "id": completion["id"] ?? "", "type": "message", "role": "assistant", "model": completion["model"] ?? "",
            "content": .array(content),
            "stop_reason": .string(Self.stopReason(finish: choice?["finish_reason"], native: choice?["native_finish_reason"])),
            "stop_sequence": nil, "usage": Self.usage(completion["usage"]), "provider": completion["provider"] ?? nil,
        ]
    }

    func makeStream(generationID: String, model: String) -> (any SurfaceStream)? {
        AnthropicMessageStream(generationID: generationID, model: model)
    }

    func errorResponse(_ error: APIError) -> Response { AnthropicErrors.response(error) }

    /// Anthropic answers a request that fails before any output with an HTTP error (a 529 its
    /// clients retry), not a stream holding an error event.
    var holdsStreamHead: Bool { true }

    // MARK: Request translation

    /// One Messages turn as chat messages: a user turn's tool results become `tool` messages
    /// first (chat wants them right after the assistant's calls), then the rest of its content.
    static func chatMessages(_ turn: JSONValue, index: Int, nativeOnly: inout PromptBound) throws(InvalidRequest) -> [JSONValue] {
        guard let role = turn["role"]?.stringValue, role == "user" || role == "assistant" else {
            throw InvalidRequest("messages[\(index)].role must be \"user\" or \"assistant\"")
        }
        let blocks: [JSONValue]
        switch turn["content"] {
        case .string(let text)?: return [["role": .string(role), "content": .string(text)]]
        case .array(let list)?: blocks = list
        default: throw InvalidRequest("messages[\(index)].content must be a string or an array of content blocks")
        }
        var out: [JSONValue] = []
        var parts: [JSONValue] = []
        var text: [String] = []
        var calls: [JSONValue] = []
        for (position, block) in blocks.enumerated() {
            let path = "messages[\(index)].content[\(position)]"
            switch block["type"]?.stringValue {
            case "text"?:
                guard let value = block["text"]?.stringValue else { throw InvalidRequest("\(path).text must be a string") }
                if role == "assistant" { text.append(value) } else { parts.append(["type": "text", "text": .string(value)]) }
            case "image"?:
                guard role == "user" else { throw InvalidRequest("\(path): images belong in user turns") }
                parts.append(["type": "image_url", "image_url": ["url": .string(try mediaURL(block["source"], path: path))]])
            case "document"?:
                guard role == "user" else { throw InvalidRequest("\(path): documents belong in user turns") }
                parts.append(try document(block, path: path))
            case "tool_use"?:
                guard role == "assistant", let id = block["id"]?.stringValue, let name = block["name"]?.stringValue else {
                    throw InvalidRequest("\(path): a tool_use block needs an id and a name, in an assistant turn")
                }
                calls.append([
                    "id": .string(id), "type": "function",
                    "function": ["name": .string(name), "arguments": .string(JSONWriter.string(block["input"] ?? [:]))],
                ])
            case "tool_result"?:
                guard role == "user", let id = block["tool_use_id"]?.stringValue else {
                    throw InvalidRequest("\(path): a tool_result block needs a tool_use_id, in a user turn")
                }
                var result = try toolResultText(block["content"], path: path)
                // What a tool result holds besides text reaches only Anthropic: counted whole.
                for part in block["content"]?.arrayValue ?? [] {
                    switch part["type"]?.stringValue {
                    case "text"?: break
                    case "image"?: nativeOnly.images += 1
                    case "document"?:
                        nativeOnly.files += 1
                        nativeOnly.textTokens += JSONWriter.bytes(part).count + 1
                        if part["source"]?["type"]?.stringValue == "url" { nativeOnly.unboundedFiles += 1 }
                    default: nativeOnly.textTokens += JSONWriter.bytes(part).count + 1
                    }
                }
                if block["is_error"]?.boolValue == true { result = "Error: " + result }
                out.append(["role": "tool", "tool_call_id": .string(id), "content": .string(result)])
            case "thinking"?, "redacted_thinking"?:
                // Reasoning an upstream produced earlier: only Anthropic reads it back (the
                // native body carries it there); a translated request leaves it out.
                nativeOnly.textTokens += JSONWriter.bytes(block).count + 1
                continue
            case let other:
                throw InvalidRequest("\(path).type \(other.map { "'\($0)'" } ?? "(missing)") is not a content block this router reads")
            }
        }
        if role == "assistant" {
            var message: JSONObject = ["role": "assistant", "content": text.isEmpty ? nil : .string(text.joined())]
            if !calls.isEmpty { message["tool_calls"] = .array(calls) }
            if !text.isEmpty || !calls.isEmpty { out.append(.object(message)) }
        } else if !parts.isEmpty {
            out.append(["role": "user", "content": .array(parts)])
        }
        return out
    }

    /// An image or document `source` as a URL: `data:` for base64, the URL itself for `url`.
    static func mediaURL(_ source: JSONValue?, path: String) throws(InvalidRequest) -> String {
        switch source?["type"]?.stringValue {
        case "base64"?:
            guard let type = source?["media_type"]?.stringValue, let data = source?["data"]?.stringValue else {
                throw InvalidRequest("\(path).source needs media_type and data")
            }
            return "data:\(type);base64,\(data)"
        case "url"?:
            guard let url = source?["url"]?.stringValue else { throw InvalidRequest("\(path).source.url must be a string") }
            return url
        default: throw InvalidRequest("\(path).source.type must be \"base64\" or \"url\"")
        }
    }

    /// A document block as a chat part: plain text as text, a PDF as a file part.
    static func document(_ block: JSONValue, path: String) throws(InvalidRequest) -> JSONValue {
        let source = block["source"]
        if source?["type"]?.stringValue == "text", let text = source?["data"]?.stringValue {
            return ["type": "text", "text": .string(text)]
        }
        let url = try mediaURL(source, path: path)
        let name = block["title"]?.stringValue ?? "document.pdf"
        return url.hasPrefix("data:")
            ? ["type": "file", "file": ["filename": .string(name), "file_data": .string(url)]]
            : ["type": "file", "file": ["filename": .string(name), "file_url": .string(url)]]
    }

    static func toolResultText(_ content: JSONValue?, path: String) throws(InvalidRequest) -> String {
        switch content {
        case nil, .null?: return ""
        case .string(let text)?: return text
        case .array(let blocks)?:
            return blocks.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }.joined(separator: "\n")
        default: throw InvalidRequest("\(path).content must be a string or an array of blocks")
        }
    }

    static func chatTool(_ index: Int, _ tool: JSONValue) throws(InvalidRequest) -> JSONValue {
        if let type = tool["type"]?.stringValue, type != "custom" {
            throw InvalidRequest(
                "tools[\(index)]: Anthropic's server tools ('\(type)') run only on Anthropic; this router serves custom tools")
        }
        guard let name = tool["name"]?.stringValue, !name.isEmpty else { throw InvalidRequest("tools[\(index)].name is required") }
        var function: JSONObject = ["name": .string(name), "parameters": tool["input_schema"] ?? ["type": "object"]]
        if let description = tool["description"], !description.isNull { function["description"] = description }
        return ["type": "function", "function": .object(function)]
    }

    static func chatToolChoice(_ choice: JSONValue) throws(InvalidRequest) -> (JSONValue, parallel: Bool?) {
        let parallel = choice["disable_parallel_tool_use"]?.boolValue.map { !$0 }
        switch choice["type"]?.stringValue {
        case "auto"?: return ("auto", parallel)
        case "any"?: return ("required", parallel)
        case "none"?: return ("none", nil)
        case "tool"?:
            guard let name = choice["name"]?.stringValue else { throw InvalidRequest("'tool_choice.name' is required for type tool") }
            return (["type": "function", "function": ["name": .string(name)]], parallel)
        default: throw InvalidRequest("'tool_choice.type' must be auto, any, tool or none")
        }
    }

    // MARK: Response translation

    /// The thinking blocks of an answer: one per signed (or encrypted) reasoning detail, in
    /// order, or the reasoning text alone (unsigned, from an upstream that is not Anthropic).
    static func thinkingBlocks(reasoning: String?, details: JSONValue?) -> [JSONValue] {
        let entries = details?.arrayValue ?? []
        var blocks: [JSONValue] = []
        var textUsed = false
        for entry in entries {
            switch entry["type"]?.stringValue {
            case "reasoning.encrypted"?: blocks.append(["type": "redacted_thinking", "data": entry["data"] ?? ""])
            case "reasoning.text"?:
                // The streamed reasoning text is the thinking of the first signed block.
                let text = entry["text"]?.stringValue ?? (textUsed ? "" : reasoning ?? "")
                textUsed = true
                blocks.append(["type": "thinking", "thinking": .string(text), "signature": entry["signature"] ?? ""])
            default: continue
            }
        }
        if !textUsed, let reasoning, !reasoning.isEmpty {
            blocks.insert(["type": "thinking", "thinking": .string(reasoning), "signature": ""], at: 0)
        }
        return blocks
    }

    /// A tool call's arguments as the `input` object Anthropic clients expect.
    static func toolInput(_ arguments: String?) -> JSONValue {
        guard let arguments, let parsed = try? JSONParser.parse(arguments), parsed.objectValue != nil else { return [:] }
        return parsed
    }

    /// Anthropic's stop reason for a chat finish: the upstream's own when it was Anthropic's.
    static func stopReason(finish: JSONValue?, native: JSONValue?) -> String {
        if let native = native?.stringValue,
            ["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"].contains(native)
        {
            return native
        }
        switch finish?.stringValue {
        case "length"?: return "max_tokens"
        case "tool_calls"?: return "tool_use"
        case "content_filter"?: return "refusal"
        default: return "end_turn"
        }
    }

    /// Chat usage as Anthropic counts it: `input_tokens` excludes cache reads and writes.
    static func usage(_ usage: JSONValue?) -> JSONValue {
        let prompt = usage?["prompt_tokens"]?.intValue ?? 0
        let cacheRead = usage?["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0
        let cacheWrite = usage?["prompt_tokens_details"]?["cache_write_tokens"]?.intValue ?? 0
        return [
            "input_tokens": .int(Int64(max(prompt - cacheRead - cacheWrite, 0))),
            "output_tokens": .int(Int64(usage?["completion_tokens"]?.intValue ?? 0)),
            "cache_creation_input_tokens": .int(Int64(cacheWrite)), "cache_read_input_tokens": .int(Int64(cacheRead)),
            "cost": usage?["cost"] ?? nil,
        ]
    }

    /// `count_tokens`: an estimate of the prompt's tokens, about four bytes of text per token
    /// plus each image's typical cost — not the reservation's bound, which is one per byte.
    func countTokens(_ body: ByteBuffer) throws -> JSONValue {
        var nativeOnly = PromptBound()
        let chat = try ChatRequest(json: .object(try chatBody(from: Self.object(body), forCounting: true, nativeOnly: &nativeOnly)))
        let text = (chat.prompt.textTokens + 3) / 4
        return ["input_tokens": .int(Int64(text + chat.prompt.images * 1_600 + chat.prompt.files * PromptBound.perFile))]
    }
}

/// Claude Code and the Anthropic SDKs name models as Anthropic does (`claude-sonnet-4-5`,
/// `claude-sonnet-4-5-20250929`); the catalog as OpenRouter does (`anthropic/claude-sonnet-4.5`).
enum AnthropicModelNames {
    /// The catalog id for `name`: a catalog id as it is; otherwise, for a `claude-` name, the
    /// date suffix (`-20250929`) or `-latest` dropped, a dash between two version digits made a
    /// dot, and `anthropic/` put in front. Nil when the catalog has no such model.
    static func resolve(_ name: String, in catalog: Catalog) -> String? {
        if catalog.model(id: name) != nil { return name }
        guard name.hasPrefix("claude-") else { return nil }
        var parts = name.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        if let last = parts.last, last == "latest" || (last.count == 8 && last.allSatisfy(\.isNumber)) { parts.removeLast() }
        var id = ""
        for (index, part) in parts.enumerated() {
            if index > 0 {
                let digits = { (text: String) in !text.isEmpty && text.allSatisfy(\.isNumber) }
                id += digits(parts[index - 1]) && digits(part) ? "." : "-"
            }
            id += part
        }
        let candidate = "anthropic/" + id
        return catalog.model(id: candidate) != nil ? candidate : nil
    }
}

/// Errors as Anthropic sends them: `{"type":"error","error":{"type":…,"message":…}}`, with the
/// status an Anthropic client maps to its exception classes.
enum AnthropicErrors {
    static func response(_ error: APIError) -> Response {
        let status = kind(error).status
        var headers: HTTPFields = [.contentType: "application/json"]
        for (name, value) in error.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return Response(
            status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.bytes(body(error)))))
    }

    static func body(_ error: APIError) -> JSONValue {
        ["type": "error", "error": ["type": .string(kind(error).type), "message": .string(error.message)]]
    }

    /// Anthropic's status and error type for a router error. A request every provider refused as
    /// overloaded is Anthropic's 529 `overloaded_error`, which its clients back off and retry.
    static func kind(_ error: APIError) -> (status: Int, type: String) {
        let upstream = error.metadata?["provider_code"]?.stringValue
        switch error.statusCode {
        case 400: return (400, "invalid_request_error")
        case 401: return (401, "authentication_error")
        case 402: return (402, "billing_error")
        case 403: return (403, "permission_error")
        case 404: return (404, "not_found_error")
        case 408, 504: return (504, "timeout_error")
        case 413: return (413, "request_too_large")
        case 429: return (429, "rate_limit_error")
        case 502 where upstream == "529" || upstream == "503": return (529, "overloaded_error")
        default: return (error.statusCode, error.statusCode >= 500 ? "api_error" : "invalid_request_error")
        }
    }
}

/// Every error on the Messages routes in Anthropic's shape, authentication included (it runs
/// inside this middleware).
struct AnthropicErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return AnthropicErrors.response(JSONErrorMiddleware<Context>.apiError(for: error, request: request, context: context))
        }
    }
}

/// A streamed chat answer as Anthropic's event stream: `message_start` at once, then a content
/// block per kind of output (thinking, text, each tool call) with its deltas, `message_delta`
/// with the stop reason and usage, and `message_stop`; `ping`s while waiting for the first token.
struct AnthropicMessageStream: SurfaceStream {
    enum Block: Equatable {
        case thinking, text
        case tool(Int)
        case redacted(Int)
    }

    let generationID: String
    let model: String
    /// The block being written and its index; nil before the first and after the last.
    var open: (block: Block, index: Int)?
    var nextIndex = 0
    var tools = ToolCallSequencer()
    var stopReason = "end_turn"
    var finished = false

    init(generationID: String, model: String) {
        self.generationID = generationID
        self.model = model
    }

    var opening: ByteBuffer {
        var out: [UInt8] = []
        Self.write(
            "message_start",
            [
                "type": "message_start",
                "message": [
                    "id": .string(generationID), "type": "message", "role": "assistant", "model": .string(model), "content": [],
                    "stop_reason": nil, "stop_sequence": nil,
                    "usage": ["input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0],
                ],
            ], into: &out)
        return ByteBuffer(bytes: out)
    }

    var keepAlive: ByteBuffer { ByteBuffer(string: "event: ping\ndata: {\"type\": \"ping\"}\n\n") }

    mutating func translate(_ chatEvents: ByteBuffer) -> ByteBuffer {
        var out: [UInt8] = []
        for event in Self.chatEvents(chatEvents) {
            guard let chunk = event, !finished else { continue }
            if let error = chunk["error"], !error.isNull {
                let status = error["code"]?.intValue ?? 502
                let apiError = APIError(
                    status: status, message: error["message"]?.stringValue ?? "Provider returned error",
                    metadata: error["metadata"]?.objectValue)
                Self.write("error", AnthropicErrors.body(apiError), into: &out)
                finished = true
                continue
            }
            if let choice = chunk["choices"]?.arrayValue?.first(where: { ($0["index"]?.intValue ?? 0) == 0 }) {
                write(choice, into: &out)
            }
            if let usage = chunk["usage"], !usage.isNull {
                close(into: &out)
                writeWaitingCalls(into: &out)
                Self.write(
                    "message_delta",
                    [
                        "type": "message_delta", "delta": ["stop_reason": .string(stopReason), "stop_sequence": nil],
                        "usage": AnthropicMessagesSurface.usage(usage),
                    ], into: &out)
                Self.write("message_stop", ["type": "message_stop"], into: &out)
                finished = true
            }
        }
        return ByteBuffer(bytes: out)
    }

    private mutating func write(_ choice: JSONValue, into out: inout [UInt8]) {
        let delta = choice["delta"]
        if let reasoning = delta?["reasoning"]?.stringValue, !reasoning.isEmpty {
            start(.thinking, ["type": "thinking", "thinking": "", "signature": ""], into: &out)
            writeDelta(["type": "thinking_delta", "thinking": .string(reasoning)], into: &out)
        }
        for detail in delta?["reasoning_details"]?.arrayValue ?? [] {
            switch detail["type"]?.stringValue {
            case "reasoning.text"? where detail["signature"].map({ !$0.isNull }) ?? false:
                start(.thinking, ["type": "thinking", "thinking": "", "signature": ""], into: &out)
                writeDelta(["type": "signature_delta", "signature": detail["signature"] ?? ""], into: &out)
            case "reasoning.encrypted"?:
                close(into: &out)
                start(.redacted(nextIndex), ["type": "redacted_thinking", "data": detail["data"] ?? ""], into: &out)
                close(into: &out)
            default: continue
            }
        }
        if let text = delta?["content"]?.stringValue, !text.isEmpty {
            start(.text, ["type": "text", "text": ""], into: &out)
            writeDelta(["type": "text_delta", "text": .string(text)], into: &out)
        }
        for call in delta?["tool_calls"]?.arrayValue ?? [] {
            let openCall: Int? = if case .tool(let index)? = open?.block { index } else { nil }
            switch tools.take(call, openCall: openCall) {
            case .start(let index, let id, let name, let arguments):
                startCall(index, id: id, name: name, arguments: arguments, into: &out)
            case .arguments(let fragment): writeDelta(["type": "input_json_delta", "partial_json": .string(fragment)], into: &out)
            case .hold: break
            }
        }
        if let finish = choice["finish_reason"], !finish.isNull {
            stopReason = AnthropicMessagesSurface.stopReason(finish: finish, native: choice["native_finish_reason"])
        }
    }

    /// Calls that streamed while another call's block was open, each as a whole block.
    private mutating func writeWaitingCalls(into out: inout [UInt8]) {
        for (index, call) in tools.held() {
            startCall(index, id: call.id, name: call.name, arguments: call.arguments, into: &out)
            close(into: &out)
        }
    }

    private mutating func startCall(_ index: Int, id: String?, name: String, arguments: String, into out: inout [UInt8]) {
        start(.tool(index), ["type": "tool_use", "id": .string(id ?? "toolu_\(index)"), "name": .string(name), "input": [:]], into: &out)
        if !arguments.isEmpty { writeDelta(["type": "input_json_delta", "partial_json": .string(arguments)], into: &out) }
    }

    /// Opens a block of `kind` unless one is open, closing the one before.
    private mutating func start(_ kind: Block, _ block: JSONValue, into out: inout [UInt8]) {
        if open?.block == kind { return }
        close(into: &out)
        open = (kind, nextIndex)
        Self.write(
            "content_block_start", ["type": "content_block_start", "index": .int(Int64(nextIndex)), "content_block": block], into: &out)
        nextIndex += 1
    }

    private func writeDelta(_ body: JSONValue, into out: inout [UInt8]) {
        guard let open else { return }
        Self.write("content_block_delta", ["type": "content_block_delta", "index": .int(Int64(open.index)), "delta": body], into: &out)
    }

    private mutating func close(into out: inout [UInt8]) {
        guard let current = open else { return }
        Self.write("content_block_stop", ["type": "content_block_stop", "index": .int(Int64(current.index))], into: &out)
        open = nil
    }

    static func write(_ name: String, _ data: JSONValue, into out: inout [UInt8]) {
        out += "event: \(name)\ndata: ".utf8
        JSONWriter.write(data, into: &out)
        out += "\n\n".utf8
    }
}
