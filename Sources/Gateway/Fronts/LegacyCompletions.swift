import HTTPTypes
import Hummingbird
import NIOCore
import SignalboxCore

/// `POST /api/v1/completions`, OpenAI's legacy text completions: a `prompt` in, `choices[].text`
/// out. The prompt becomes one user message of a chat request, so every chat model and upstream
/// format serves it; the answer's text is the assistant message's content.
struct LegacyCompletionsSurface: ChatSurface {
    /// Legacy parameters with no chat equivalent: refused, so a client never gets an answer that
    /// silently ignored them.
    static let unsupported: [(field: String, isUsed: @Sendable (JSONValue) -> Bool)] = [
        ("echo", { $0.boolValue == true }),
        ("suffix", { !$0.isNull && $0.stringValue != "" }),
        ("best_of", { !$0.isNull && $0.intValue != 1 }),
        ("logprobs", { !$0.isNull && $0.boolValue != false }),
        // Chat outputs a text completion has no place for: they would be billed, never seen.
        ("tools", { !$0.isNull }), ("tool_choice", { !$0.isNull }), ("functions", { !$0.isNull }),
        ("function_call", { !$0.isNull }), ("modalities", { !$0.isNull }), ("audio", { !$0.isNull }),
        ("response_format", { !$0.isNull }),
    ]

    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest {
        var object = try Self.object(body)
        let prompt: String
        switch object["prompt"] {
        case .string(let text)?: prompt = text
        case .array(let items)? where items.count == 1 && items[0].stringValue != nil: prompt = items[0].stringValue!
        case .array(let items)? where items.allSatisfy({ $0.stringValue != nil }) && !items.isEmpty:
            throw InvalidRequest("'prompt' with more than one prompt is not supported: send one request per prompt")
        case .array(let items)? where !items.isEmpty:
            throw InvalidRequest("'prompt' as token ids is not supported: send the text")
        case nil, .null?: throw InvalidRequest("'prompt' is required")
        default: throw InvalidRequest("'prompt' must be a string or an array of one string")
        }
        for (field, isUsed) in Self.unsupported {
            if let value = object[field], isUsed(value) { throw InvalidRequest("'\(field)' is not supported on /completions") }
            object[field] = nil
        }
        if object["messages"] != nil { throw InvalidRequest("'messages' belongs to /chat/completions; /completions takes 'prompt'") }
        object["prompt"] = nil
        object["messages"] = [["role": "user", "content": .string(prompt)]]
        return try ChatRequest(json: .object(object))
    }

    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue {
        var object = completion.objectValue ?? JSONObject()
        object["object"] = "text_completion"
        object["choices"] = .array((completion["choices"]?.arrayValue ?? []).map(Self.choice(fromMessage:)))
        return .object(object)
    }

    func makeStream(generationID: String, model: String) -> (any SurfaceStream)? { LegacyCompletionStream() }

    func errorResponse(_ error: APIError) -> Response { error.jsonResponse() }

    /// A chat choice as a text choice: `message.content` (or a stream's `delta.content`) becomes `text`.
    static func choice(fromMessage choice: JSONValue) -> JSONValue {
        let message = choice["message"] ?? choice["delta"]
        return [
            "index": choice["index"] ?? 0, "text": .string(message?["content"]?.stringValue ?? ""), "logprobs": nil,
            "finish_reason": choice["finish_reason"] ?? nil, "native_finish_reason": choice["native_finish_reason"] ?? nil,
        ]
    }
}

/// A streamed legacy completion: each chat chunk becomes a `text_completion` chunk with the same
/// id, model, provider and usage; chunks with no text and no finish (the role, reasoning) are left out.
struct LegacyCompletionStream: SurfaceStream {
    var keepAlive: ByteBuffer { ChatResponses.processing }

    mutating func translate(_ chatEvents: ByteBuffer) -> ByteBuffer {
        var out: [UInt8] = []
        for event in Self.chatEvents(chatEvents) {
            guard var chunk = event?.objectValue else {
                out += "data: [DONE]\n\n".utf8
                continue
            }
            let choices = (chunk["choices"]?.arrayValue ?? []).map(LegacyCompletionsSurface.choice(fromMessage:))
            let usage = chunk["usage"].map { !$0.isNull } ?? false
            let textOrFinish = choices.filter { ($0["text"]?.stringValue ?? "") != "" || !($0["finish_reason"]?.isNull ?? true) }
            guard !textOrFinish.isEmpty || usage || chunk["error"] != nil else { continue }
            chunk["object"] = "text_completion"
            chunk["choices"] = .array(usage && choices.isEmpty ? [] : textOrFinish.isEmpty ? choices : textOrFinish)
            ChatResponses.writeSSE(.object(chunk), into: &out)
        }
        return ByteBuffer(bytes: out)
    }
}
