import Foundation
import NIOCore
import SignalboxCore

/// The OpenAI Chat Completions wire format, spoken by OpenAI and most other providers.
///
/// The request body is the client's, minus router-only fields and unsupported parameters, with
/// the endpoint's model name and `stream_options.include_usage` forced on so every call reports usage.
public struct OpenAIAdapter: ProviderAdapter {
    public init() {}

    public func makeRequest(_ request: ChatRequest, attempt: PlannedAttempt, apiKey: String?) -> UpstreamRequest {
        let unsupported = unsupportedParameters(request, attempt.endpoint)
        // The client's members are copied as written (of a repeated name, `ChatRequest` kept
        // the last), except those the router owns or the endpoint does not take.
        func copied(_ member: ChatRequest.Member) -> Bool {
            switch member.field {
            case .model?, .maxTokens?, .maxCompletionTokens?, .stream?, .streamOptions?, .n?, .reasoning?, .includeReasoning?,
                .reasoningEffort?:
                return false
            case let field?: return !field.isRouterOnly && !unsupported.contains(field.name)
            case nil: return true
            }
        }
        var body = ByteBuffer()
        body.reserveCapacity(request.bodyBytes.count + 160)
        body.writeInteger(UInt8(ascii: "{"))
        var first = true
        func separate() {
            if !first { body.writeInteger(UInt8(ascii: ",")) }
            first = false
        }
        for member in request.members where copied(member) {
            separate()
            body.writeBytes(request.bodyBytes[member.span])
        }
        func write(_ name: StaticString, _ value: JSONValue) {
            separate()
            body.writeStaticString(name)
            var bytes: [UInt8] = []
            JSONWriter.write(value, into: &bytes)
            body.writeBytes(bytes)
        }
        write(#""model":"#, .string(attempt.endpoint.upstreamModel))
        // OpenRouter's `reasoning` object becomes OpenAI's `reasoning_effort`.
        if let reasoning = request.reasoning, reasoning.enabled, !unsupported.contains("reasoning") {
            let effort: String =
                switch reasoning.effort ?? .medium {
                case .none, .minimal: "minimal"
                case .low: "low"
                case .medium: "medium"
                case .high, .xhigh, .max: "high"
                }
            write(#""reasoning_effort":"#, .string(effort))
        }
        // The reservation covers `completionLimit` tokens per choice, for `n` choices: the
        // upstream is told both as the router read them, in the field the client used
        // (`max_completion_tokens` for OpenAI's reasoning models).
        let limit = JSONValue.int(Int64(attempt.completionLimit(for: request)))
        if request.field(.maxCompletionTokens).map({ !$0.isNull }) ?? false {
            write(#""max_completion_tokens":"#, limit)
        } else {
            write(#""max_tokens":"#, limit)
        }
        if request.choices != 1 { write(#""n":"#, .int(Int64(request.choices))) }
        write(#""stream":"#, true)
        var streamOptions = request.field(.streamOptions)?.objectValue ?? JSONObject()
        streamOptions["include_usage"] = true
        write(#""stream_options":"#, .object(streamOptions))
        body.writeInteger(UInt8(ascii: "}"))
        var headers = [("content-type", "application/json"), ("accept", "text/event-stream")]
        if let apiKey { headers.append(("authorization", "Bearer \(apiKey)")) }
        return UpstreamRequest(url: url(attempt, "/chat/completions"), headers: headers, body: body)
    }

    public func makeDecoder(for request: ChatRequest) -> OpenAIStreamDecoder {
        OpenAIStreamDecoder(excludeReasoning: request.reasoning?.exclude ?? false)
    }

    public func failure(status: Int, body: ByteBuffer, retryAfter: Int?) -> UpstreamFailure {
        let raw = String(buffer: body)
        let parsed = try? JSONParser.parse(raw)
        let message =
            parsed?["error"]?["message"]?.stringValue ?? parsed?["message"]?.stringValue
            ?? "Provider returned error"
        return UpstreamFailure(.status(status), message, raw: raw, retryAfter: retryAfter)
    }
}

/// Reads OpenAI `chat.completion.chunk` events.
public struct OpenAIStreamDecoder: StreamDecoder {
    /// Leave reasoning text out of the deltas (`reasoning.exclude`).
    let excludeReasoning: Bool

    public init(excludeReasoning: Bool = false) { self.excludeReasoning = excludeReasoning }

    public mutating func decode(_ event: SSEEvent) throws(UpstreamFailure) -> [AdapterEvent] {
        if event.data == "[DONE]" { return [.done] }
        guard let json = try? JSONParser.parse(event.data),
            let chunk = json.objectValue
        else {
            throw UpstreamFailure(.malformed, "Provider sent an event that is not JSON", raw: String(event.data.prefix(2048)))
        }
        if let error = chunk["error"], !error.isNull {
            let message = error["message"]?.stringValue ?? "Provider returned an error mid-stream"
            throw UpstreamFailure(.streamError, message, raw: event.data)
        }
        if chunk["object"]?.stringValue == "error" {
            throw UpstreamFailure(.streamError, chunk["message"]?.stringValue ?? "Provider error", raw: event.data)
        }
        var events: [AdapterEvent] = []
        if let choices = chunk["choices"]?.arrayValue, !choices.isEmpty {
            let normalized = choices.map { choice -> JSONValue in
                guard var object = choice.objectValue else { return choice }
                let native = object["finish_reason"]?.stringValue
                object["finish_reason"] = FinishReason.normalize(native).map { .string($0) } ?? .null
                object["native_finish_reason"] = native.map { .string($0) } ?? .null
                if object["logprobs"] == nil { object["logprobs"] = .null }
                // DeepSeek-style `reasoning_content` is OpenRouter's `reasoning`.
                if var delta = object["delta"]?.objectValue, delta["reasoning_content"] != nil || delta["reasoning"] != nil {
                    let text = delta["reasoning"] ?? delta["reasoning_content"]
                    delta["reasoning_content"] = nil
                    delta["reasoning"] = excludeReasoning ? nil : text
                    object["delta"] = .object(delta)
                }
                return .object(object)
            }
            events.append(
                .delta(
                    CompletionDelta(
                        choices: normalized, upstreamID: chunk["id"]?.stringValue,
                        systemFingerprint: chunk["system_fingerprint"]?.stringValue
                    )))
        } else if chunk["choices"] == nil && chunk["usage"] == nil {
            throw UpstreamFailure(.malformed, "Provider sent a chunk without choices", raw: String(event.data.prefix(2048)))
        }
        if let usage = TokenUsage(openAI: chunk["usage"]) { events.append(.usage(usage)) }
        return events
    }
}
