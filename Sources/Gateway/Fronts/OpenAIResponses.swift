import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SignalboxCore

/// `POST /api/v1/responses`: OpenAI's Responses API, stateless. `input` (a string, or message,
/// function-call and function-call-output items) and `instructions` become a chat request; the
/// chat answer becomes a `response` object with `reasoning`, `message` and `function_call` output
/// items, or the Responses event stream.
struct OpenAIResponsesSurface: ChatSurface {
    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest {
        try ChatRequest(json: .object(try Self.chatBody(Self.object(body))))
    }

    static func chatBody(_ source: JSONObject) throws(InvalidRequest) -> JSONObject {
        if source["store"]?.boolValue == true {
            throw InvalidRequest("'store': this router is stateless and keeps no responses; send store: false or leave it out")
        }
        for field in ["previous_response_id", "conversation"] where !(source[field]?.isNull ?? true) {
            throw InvalidRequest("'\(field)': this router is stateless; send the whole conversation in 'input'")
        }
        if source["background"]?.boolValue == true { throw InvalidRequest("'background' responses are not supported") }
        var chat: JSONObject = [:]
        chat["model"] = source["model"]
        var messages: [JSONValue] = []
        if let instructions = source["instructions"], !instructions.isNull {
            guard let text = instructions.stringValue else { throw InvalidRequest("'instructions' must be a string") }
            messages.append(["role": "system", "content": .string(text)])
        }
        switch source["input"] {
        case .string(let text)?: messages.append(["role": "user", "content": .string(text)])
        case .array(let items)?:
            for (index, item) in items.enumerated() { try Self.append(item, index: index, to: &messages) }
        case nil, .null?: throw InvalidRequest("'input' is required")
        default: throw InvalidRequest("'input' must be a string or an array of items")
        }
        chat["messages"] = .array(messages)
        if let tools = source["tools"], !tools.isNull {
            guard let list = tools.arrayValue else { throw InvalidRequest("'tools' must be an array") }
            chat["tools"] = .array(
                try list.enumerated().map { index, tool throws(InvalidRequest) -> JSONValue in
                    guard tool["type"]?.stringValue == "function", let name = tool["name"]?.stringValue else {
                        throw InvalidRequest(
                            "tools[\(index)]: only function tools are served here (\(tool["type"]?.stringValue ?? "no type") is OpenAI's own)"
                        )
                    }
                    var function: JSONObject = ["name": .string(name), "parameters": tool["parameters"] ?? ["type": "object"]]
                    for field in ["description", "strict"] where !(tool[field]?.isNull ?? true) { function[field] = tool[field] }
                    return ["type": "function", "function": .object(function)]
                })
        }
        switch source["tool_choice"] {
        case nil, .null?: break
        case .string(let mode)?: chat["tool_choice"] = .string(mode)
        case let choice?:
            guard choice["type"]?.stringValue == "function", let name = choice["name"]?.stringValue else {
                throw InvalidRequest("'tool_choice' must be auto, none, required or {type: function, name}")
            }
            chat["tool_choice"] = ["type": "function", "function": ["name": .string(name)]]
        }
        if let limit = source["max_output_tokens"], !limit.isNull {
            guard let count = limit.intValue, count >= 1 else { throw InvalidRequest("'max_output_tokens' must be an integer ≥ 1") }
            chat["max_tokens"] = .int(Int64(count))
        }
        for field in ["temperature", "top_p", "parallel_tool_calls", "user", "stream", "top_logprobs"] where source[field] != nil {
            chat[field] = source[field]
        }
        if let effort = source["reasoning"]?["effort"], !effort.isNull { chat["reasoning_effort"] = effort }
        switch source["text"]?["format"]?["type"]?.stringValue {
        case "json_object"?: chat["response_format"] = ["type": "json_object"]
        case "json_schema"?:
            let format = source["text"]?["format"]
            var schema: JSONObject = ["name": format?["name"] ?? "response", "schema": format?["schema"] ?? ["type": "object"]]
            for field in ["strict", "description"] where !(format?[field]?.isNull ?? true) { schema[field] = format?[field] }
            chat["response_format"] = ["type": "json_schema", "json_schema": .object(schema)]
        case "text"?, nil: break
        case let other?: throw InvalidRequest("'text.format.type' \(other) is not one of text, json_object, json_schema")
        }
        for field in ChatRequest.Field.allCases where field.isRouterOnly {
            if let value = source[field.name] { chat[field.name] = value }
        }
        return chat
    }

    /// One input item as chat messages: function calls join the assistant message before them.
    static func append(_ item: JSONValue, index: Int, to messages: inout [JSONValue]) throws(InvalidRequest) {
        let path = "input[\(index)]"
        switch item["type"]?.stringValue ?? (item["role"] != nil ? "message" : nil) {
        case "message"?:
            guard let role = item["role"]?.stringValue, ["user", "system", "developer", "assistant"].contains(role) else {
                throw InvalidRequest("\(path).role must be user, system, developer or assistant")
            }
            switch item["content"] {
            case .string(let text)?: messages.append(["role": .string(role), "content": .string(text)])
            case .array(let parts)?:
                let converted = try parts.enumerated().map { position, part throws(InvalidRequest) in
                    try chatPart(part, path: "\(path).content[\(position)]")
                }
                if role == "assistant" || role == "system" || role == "developer" {
                    let text = converted.compactMap { $0["text"]?.stringValue }.joined()
                    messages.append(["role": .string(role), "content": .string(text)])
                } else {
                    messages.append(["role": .string(role), "content": .array(converted)])
                }
            default: throw InvalidRequest("\(path).content must be a string or an array of parts")
            }
        case "function_call"?:
            guard let callID = item["call_id"]?.stringValue, let name = item["name"]?.stringValue else {
                throw InvalidRequest("\(path): a function_call needs call_id and name")
            }
            let call: JSONValue = [
                "id": .string(callID), "type": "function",
                "function": ["name": .string(name), "arguments": item["arguments"] ?? "{}"],
            ]
            if var last = messages.last?.objectValue, last["role"] == "assistant" {
                last["tool_calls"] = .array((last["tool_calls"]?.arrayValue ?? []) + [call])
                messages[messages.count - 1] = .object(last)
            } else {
                messages.append(["role": "assistant", "content": nil, "tool_calls": [call]])
            }
        case "function_call_output"?:
            guard let callID = item["call_id"]?.stringValue else { throw InvalidRequest("\(path): a function_call_output needs call_id") }
            let output: String =
                switch item["output"] {
                case .string(let text)?: text
                case .array(let parts)?: parts.compactMap { $0["text"]?.stringValue }.joined()
                default: ""
                }
            messages.append(["role": "tool", "tool_call_id": .string(callID), "content": .string(output)])
        case "reasoning"?:
            return  // a previous answer's reasoning: upstreams take none back in chat form
        case "item_reference"?:
            throw InvalidRequest("\(path): item references need stored responses; this router is stateless")
        case let other:
            throw InvalidRequest("\(path).type \(other.map { "'\($0)'" } ?? "(missing)") is not an input item this router reads")
        }
    }

    static func chatPart(_ part: JSONValue, path: String) throws(InvalidRequest) -> JSONValue {
        switch part["type"]?.stringValue {
        case "input_text"?, "output_text"?, "text"?:
            guard let text = part["text"]?.stringValue else { throw InvalidRequest("\(path).text must be a string") }
            return ["type": "text", "text": .string(text)]
        case "input_image"?:
            guard let url = part["image_url"]?.stringValue else {
                throw InvalidRequest("\(path): input_image needs image_url (file ids need stored files; this router is stateless)")
            }
            var image: JSONObject = ["url": .string(url)]
            if let detail = part["detail"], !detail.isNull { image["detail"] = detail }
            return ["type": "image_url", "image_url": .object(image)]
        case "input_file"?:
            guard let data = part["file_data"]?.stringValue else { throw InvalidRequest("\(path): input_file needs file_data") }
            return ["type": "file", "file": ["filename": part["filename"] ?? "file", "file_data": .string(data)]]
        case let other:
            throw InvalidRequest("\(path).type \(other.map { "'\($0)'" } ?? "(missing)") is not a content part this router reads")
        }
    }

    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue {
        let choice = completion["choices"]?.arrayValue?.first
        let message = choice?["message"]
        let id = completion["id"]?.stringValue ?? ""
        var output: [JSONValue] = []
        if let reasoning = message?["reasoning"]?.stringValue, !reasoning.isEmpty {
            output.append(ResponsesItems.reasoning(id: id, index: 0, text: reasoning))
        }
        let calls = message?["tool_calls"]?.arrayValue ?? []
        if let text = message?["content"]?.stringValue, !text.isEmpty || calls.isEmpty {
            output.append(ResponsesItems.message(id: id, index: output.count, text: text, done: true))
        }
        for call in calls {
            output.append(
                ResponsesItems.functionCall(
                    id: id, index: output.count, callID: call["id"]?.stringValue ?? "", name: call["function"]?["name"]?.stringValue ?? "",
                    arguments: call["function"]?["arguments"]?.stringValue ?? "", done: true))
        }
        return ResponsesItems.response(
            id: id, model: completion["model"] ?? "", created: completion["created"] ?? 0, output: output,
            finish: choice?["finish_reason"]?.stringValue, usage: completion["usage"], provider: completion["provider"])
    }

    func makeStream(generationID: String, model: String) -> (any SurfaceStream)? {
        ResponsesEventStream(id: generationID, model: model)
    }

    func errorResponse(_ error: APIError) -> Response { error.jsonResponse() }
}

/// The Responses API's objects, for the answer and for its stream.
enum ResponsesItems {
    static func reasoning(id: String, index: Int, text: String) -> JSONValue {
        ["type": "reasoning", "id": .string("rs_\(id)_\(index)"), "summary": [["type": "summary_text", "text": .string(text)]]]
    }

    static func outputText(_ text: String) -> JSONValue { ["type": "output_text", "text": .string(text), "annotations": []] }

    static func message(id: String, index: Int, text: String, done: Bool) -> JSONValue {
        [
            "type": "message", "id": .string("msg_\(id)_\(index)"), "status": done ? "completed" : "in_progress",
            "role": "assistant", "content": done ? [outputText(text)] : [],
        ]
    }

    static func functionCall(id: String, index: Int, callID: String, name: String, arguments: String, done: Bool) -> JSONValue {
        [
            "type": "function_call", "id": .string("fc_\(id)_\(index)"), "call_id": .string(callID), "name": .string(name),
            "arguments": .string(arguments), "status": done ? "completed" : "in_progress",
        ]
    }

    /// A `response` object; `finish` nil while it is still running.
    static func response(
        id: String, model: JSONValue, created: JSONValue, output: [JSONValue], finish: String?, usage: JSONValue?,
        provider: JSONValue? = nil, failure: JSONValue? = nil
    ) -> JSONValue {
        let status: String =
            failure != nil ? "failed" : finish == nil ? "in_progress" : finish == "length" ? "incomplete" : "completed"
        return [
            "id": .string(id), "object": "response", "created_at": created, "status": .string(status), "model": model,
            "output": .array(output), "error": failure ?? nil,
            "incomplete_details": status == "incomplete" ? ["reason": "max_output_tokens"] : nil,
            "usage": usage.map(Self.usage) ?? nil, "provider": provider ?? nil, "parallel_tool_calls": true, "tools": [],
            "tool_choice": "auto", "metadata": [:],
        ]
    }

    /// Chat usage as the Responses API names it.
    static func usage(_ usage: JSONValue) -> JSONValue {
        guard !usage.isNull else { return nil }
        let input = usage["prompt_tokens"]?.intValue ?? 0
        let output = usage["completion_tokens"]?.intValue ?? 0
        return [
            "input_tokens": .int(Int64(input)),
            "input_tokens_details": ["cached_tokens": usage["prompt_tokens_details"]?["cached_tokens"] ?? 0],
            "output_tokens": .int(Int64(output)),
            "output_tokens_details": ["reasoning_tokens": usage["completion_tokens_details"]?["reasoning_tokens"] ?? 0],
            "total_tokens": .int(Int64(input + output)), "cost": usage["cost"] ?? nil,
        ]
    }
}

/// A streamed chat answer as the Responses event stream: `response.created` and
/// `response.in_progress` at once; per output item `response.output_item.added`, its parts and
/// deltas and their `…done` events, and `response.output_item.done`; then `response.completed`
/// (`response.incomplete` when the output limit cut it, `response.failed` on an error) with the
/// whole response. Every event has a `sequence_number`.
struct ResponsesEventStream: SurfaceStream {
    enum Kind: Equatable {
        case reasoning, message
        case call(Int)
    }

    struct Item {
        var kind: Kind
        var index: Int
        var text = ""
        var callID = ""
        var name = ""
    }

    let id: String
    let model: String
    let created = JSONValue.int(Int64(Date().timeIntervalSince1970))
    /// The opening's two events are numbered 0 and 1.
    var sequence = 2
    var open: Item?
    var calls = ToolCallSequencer()
    var done: [JSONValue] = []
    var finish: String?
    var finished = false

    init(id: String, model: String) {
        self.id = id
        self.model = model
    }

    var opening: ByteBuffer {
        var out: [UInt8] = []
        let response = ResponsesItems.response(id: id, model: .string(model), created: created, output: [], finish: nil, usage: nil)
        Self.write("response.created", ["response": response], sequence: 0, into: &out)
        Self.write("response.in_progress", ["response": response], sequence: 1, into: &out)
        return ByteBuffer(bytes: out)
    }

    var keepAlive: ByteBuffer { ChatResponses.processing }

    mutating func translate(_ chatEvents: ByteBuffer) -> ByteBuffer {
        var out: [UInt8] = []
        for event in Self.chatEvents(chatEvents) {
            guard let chunk = event, !finished else { continue }
            if let error = chunk["error"], !error.isNull {
                close(into: &out)
                let failure: JSONValue = ["code": "server_error", "message": error["message"] ?? "Provider returned error"]
                let response = ResponsesItems.response(
                    id: id, model: .string(model), created: created, output: done, finish: "error", usage: nil, failure: failure)
                write("response.failed", ["response": response], into: &out)
                finished = true
                continue
            }
            if let choice = chunk["choices"]?.arrayValue?.first(where: { ($0["index"]?.intValue ?? 0) == 0 }) {
                write(choice, into: &out)
            }
            if let usage = chunk["usage"], !usage.isNull {
                close(into: &out)
                for (index, call) in calls.held() {
                    begin(.call(index), callID: call.id ?? "call_\(index)", name: call.name, into: &out)
                    if !call.arguments.isEmpty { append(call.arguments, into: &out) }
                    close(into: &out)
                }
                let response = ResponsesItems.response(
                    id: id, model: .string(model), created: created, output: done, finish: finish ?? "stop", usage: usage,
                    provider: chunk["provider"])
                write(finish == "length" ? "response.incomplete" : "response.completed", ["response": response], into: &out)
                finished = true
            }
        }
        return ByteBuffer(bytes: out)
    }

    private mutating func write(_ choice: JSONValue, into out: inout [UInt8]) {
        let delta = choice["delta"]
        if let reasoning = delta?["reasoning"]?.stringValue, !reasoning.isEmpty {
            begin(.reasoning, into: &out)
            append(reasoning, into: &out)
        }
        if let text = delta?["content"]?.stringValue, !text.isEmpty {
            begin(.message, into: &out)
            append(text, into: &out)
        }
        for call in delta?["tool_calls"]?.arrayValue ?? [] {
            let openCall: Int? = if case .call(let index)? = open?.kind { index } else { nil }
            switch calls.take(call, openCall: openCall) {
            case .start(let index, let id, let name, let arguments):
                begin(.call(index), callID: id ?? "call_\(index)", name: name, into: &out)
                if !arguments.isEmpty { append(arguments, into: &out) }
            case .arguments(let fragment): append(fragment, into: &out)
            case .hold: break
            }
        }
        if let reason = choice["finish_reason"]?.stringValue { finish = reason }
    }

    private var itemID: String {
        guard let open else { return "" }
        switch open.kind {
        case .reasoning: return "rs_\(id)_\(open.index)"
        case .message: return "msg_\(id)_\(open.index)"
        case .call: return "fc_\(id)_\(open.index)"
        }
    }

    private mutating func begin(_ kind: Kind, callID: String = "", name: String = "", into out: inout [UInt8]) {
        if open?.kind == kind { return }
        close(into: &out)
        let index = done.count
        open = Item(kind: kind, index: index, callID: callID, name: name)
        let outputIndex = JSONValue.int(Int64(index))
        switch kind {
        case .reasoning:
            write(
                "response.output_item.added",
                ["output_index": outputIndex, "item": ["type": "reasoning", "id": .string(itemID), "summary": []]], into: &out)
            write(
                "response.reasoning_summary_part.added",
                [
                    "item_id": .string(itemID), "output_index": outputIndex, "summary_index": 0,
                    "part": ["type": "summary_text", "text": ""],
                ],
                into: &out)
        case .message:
            write(
                "response.output_item.added",
                ["output_index": outputIndex, "item": ResponsesItems.message(id: id, index: index, text: "", done: false)], into: &out)
            write(
                "response.content_part.added",
                ["item_id": .string(itemID), "output_index": outputIndex, "content_index": 0, "part": ResponsesItems.outputText("")],
                into: &out)
        case .call:
            write(
                "response.output_item.added",
                [
                    "output_index": outputIndex,
                    "item": ResponsesItems.functionCall(id: id, index: index, callID: callID, name: name, arguments: "", done: false),
                ], into: &out)
        }
    }

    private mutating func append(_ text: String, into out: inout [UInt8]) {
        guard let current = open else { return }
        open?.text += text
        let base: JSONObject = ["item_id": .string(itemID), "output_index": .int(Int64(current.index))]
        var event = base
        switch current.kind {
        case .reasoning:
            event["summary_index"] = 0
            event["delta"] = .string(text)
            write("response.reasoning_summary_text.delta", event, into: &out)
        case .message:
            event["content_index"] = 0
            event["delta"] = .string(text)
            event["logprobs"] = []
            write("response.output_text.delta", event, into: &out)
        case .call:
            event["delta"] = .string(text)
            write("response.function_call_arguments.delta", event, into: &out)
        }
    }

    private mutating func close(into out: inout [UInt8]) {
        guard let current = open else { return }
        let itemID = self.itemID
        let outputIndex = JSONValue.int(Int64(current.index))
        let item: JSONValue
        switch current.kind {
        case .reasoning:
            let part: JSONValue = ["type": "summary_text", "text": .string(current.text)]
            write(
                "response.reasoning_summary_text.done",
                ["item_id": .string(itemID), "output_index": outputIndex, "summary_index": 0, "text": .string(current.text)], into: &out)
            write(
                "response.reasoning_summary_part.done",
                ["item_id": .string(itemID), "output_index": outputIndex, "summary_index": 0, "part": part], into: &out)
            item = ResponsesItems.reasoning(id: id, index: current.index, text: current.text)
        case .message:
            write(
                "response.output_text.done",
                [
                    "item_id": .string(itemID), "output_index": outputIndex, "content_index": 0, "text": .string(current.text),
                    "logprobs": [],
                ],
                into: &out)
            write(
                "response.content_part.done",
                [
                    "item_id": .string(itemID), "output_index": outputIndex, "content_index": 0,
                    "part": ResponsesItems.outputText(current.text),
                ],
                into: &out)
            item = ResponsesItems.message(id: id, index: current.index, text: current.text, done: true)
        case .call:
            write(
                "response.function_call_arguments.done",
                ["item_id": .string(itemID), "output_index": outputIndex, "arguments": .string(current.text)], into: &out)
            item = ResponsesItems.functionCall(
                id: id, index: current.index, callID: current.callID, name: current.name, arguments: current.text, done: true)
        }
        write("response.output_item.done", ["output_index": outputIndex, "item": item], into: &out)
        done.append(item)
        open = nil
    }

    private mutating func write(_ type: String, _ fields: JSONObject, into out: inout [UInt8]) {
        Self.write(type, fields, sequence: sequence, into: &out)
        sequence += 1
    }

    static func write(_ type: String, _ fields: JSONObject, sequence: Int, into out: inout [UInt8]) {
        var event = fields
        event["type"] = .string(type)
        event["sequence_number"] = .int(Int64(sequence))
        out += "event: \(type)\ndata: ".utf8
        JSONWriter.write(.object(event), into: &out)
        out += "\n\n".utf8
    }
}
