import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

import HTTPTypes
import Hummingbird

/// Every OpenAI-shaped answer a chat request gets, in one place: the non-streamed
/// `chat.completion`, the stream's chunks (deltas, usage, a mid-stream error), the replay of a
/// stored completion as a stream, and the SSE framing they travel in.
enum ChatResponses {
    /// Sent at once and every few seconds until the first token (an SSE comment clients ignore).
    static let processing = ByteBuffer(string: ": SIGNALBOX PROCESSING\n\n")
    static let done = ByteBuffer(string: "data: [DONE]\n\n")

    /// The non-streamed `chat.completion` for a successful attempt (also what an idempotent
    /// retry gets back).
    static func completion(_ prepared: PreparedChat, result: AttemptResult, cost: CostBreakdown) -> JSONValue {
        if let vectors = result.embeddings {
            let usage = result.usage ?? TokenUsage()
            return [
                "id": .string(prepared.generationID), "object": "list", "model": .string(result.attempt.model.id),
                "provider": .string(result.attempt.provider.name), "created": .int(prepared.created),
                "data": .array(
                    vectors.enumerated().map { index, vector in
                        ["object": "embedding", "index": .int(Int64(index)), "embedding": .array(vector.map { .double(Double($0)) })]
                    }),
                "usage": [
                    "prompt_tokens": .int(Int64(usage.promptTokens)), "total_tokens": .int(Int64(usage.promptTokens)),
                    "cost": .number(cost.total),
                ],
            ]
        }
        return [
            "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
            "model": .string(result.attempt.model.id), "object": "chat.completion", "created": .int(prepared.created),
            "system_fingerprint": result.accumulator.systemFingerprint.map { .string($0) } ?? nil,
            "choices": .array(result.accumulator.completedChoices()),
            "usage": usage(result.usage ?? TokenUsage(), cost: cost),
        ]
    }

    static func usage(_ usage: TokenUsage, cost: CostBreakdown) -> JSONValue {
        [
            "prompt_tokens": .int(Int64(usage.promptTokens)), "completion_tokens": .int(Int64(usage.completionTokens)),
            "total_tokens": .int(Int64(usage.totalTokens)),
            "prompt_tokens_details": [
                "cached_tokens": .int(Int64(usage.cachedTokens)), "cache_write_tokens": .int(Int64(usage.cacheWriteTokens)),
                "audio_tokens": 0,
            ],
            "completion_tokens_details": ["reasoning_tokens": .int(Int64(usage.reasoningTokens))],
            "cost": .number(cost.total), "is_byok": false,
            "cost_details": [
                "upstream_inference_cost": nil, "upstream_inference_prompt_cost": .number(cost.prompt),
                "upstream_inference_completions_cost": .number(cost.completion),
            ],
        ]
    }

    /// A stored completion, streamed as if it were new: its message in one chunk, the finish
    /// chunk, the usage chunk and `[DONE]`.
    static func replayStream(_ completion: JSONValue, translator: (any SurfaceStream)? = nil) -> Response {
        var common: JSONObject = ["object": "chat.completion.chunk"]
        for field in ["id", "provider", "model", "created", "system_fingerprint"] { common[field] = completion[field] }
        var events: [ByteBuffer] = [processing]
        for choice in completion["choices"]?.arrayValue ?? [] {
            var delta = choice["message"]?.objectValue ?? JSONObject()
            if let calls = delta["tool_calls"]?.arrayValue {
                delta["tool_calls"] = .array(
                    calls.enumerated().map { index, call in
                        var indexed = call.objectValue ?? JSONObject()
                        indexed["index"] = .int(Int64(index))
                        return .object(indexed)
                    })
            }
            var chunk = common
            chunk["choices"] = [["index": choice["index"] ?? 0, "delta": .object(delta), "finish_reason": nil, "logprobs": nil]]
            events.append(sse(.object(chunk)))
            chunk["choices"] = [
                [
                    "index": choice["index"] ?? 0, "delta": [:], "finish_reason": choice["finish_reason"] ?? nil,
                    "native_finish_reason": choice["native_finish_reason"] ?? nil, "logprobs": nil,
                ]
            ]
            events.append(sse(.object(chunk)))
        }
        var usage = common
        usage["choices"] = []
        usage["usage"] = completion["usage"] ?? nil
        events.append(sse(.object(usage)))
        events.append(done)
        var body = ByteBuffer()
        for var event in events { body.writeBuffer(&event) }
        if var translator {
            var translated = translator.opening
            var rest = translator.translate(body)
            translated.writeBuffer(&rest)
            body = translated
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: .init(byteBuffer: body))
    }

    static func sse(_ value: JSONValue) -> ByteBuffer {
        var bytes: [UInt8] = []
        writeSSE(value, into: &bytes)
        return ByteBuffer(bytes: bytes)
    }

    /// Appends `value` as one SSE event (`data: …` and a blank line).
    static func writeSSE(_ value: JSONValue, into bytes: inout [UInt8]) {
        bytes += "data: ".utf8
        JSONWriter.write(value, into: &bytes)
        bytes += "\n\n".utf8
    }

    /// Appends the stream chunk for `delta` as an SSE event.
    static func writeChunk(_ delta: CompletionDelta, prepared: PreparedChat, attempt: PlannedAttempt, into bytes: inout [UInt8]) {
        var object: JSONObject = [
            "id": .string(prepared.generationID), "provider": .string(attempt.provider.name),
            "model": .string(attempt.model.id), "object": "chat.completion.chunk", "created": .int(prepared.created),
        ]
        if let fingerprint = delta.systemFingerprint { object["system_fingerprint"] = .string(fingerprint) }
        object["choices"] = .array(delta.choices)
        writeSSE(.object(object), into: &bytes)
    }

    static func closingEvents(_ outcome: ChatPipeline.RequestOutcome, prepared: PreparedChat) -> [ByteBuffer] {
        switch outcome {
        case .success(let result, let cost):
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
                    "model": .string(result.attempt.model.id), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "choices": [], "usage": usage(result.usage ?? TokenUsage(), cost: cost),
                ]),
                done,
            ]
        case .failure(let error, _):
            let provider = error.metadata?["provider_name"] ?? nil
            guard case .object(let errorBody)? = error.body["error"] else { return [] }
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": provider,
                    "model": .string(prepared.request.requestedModel), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "error": .object(errorBody),
                    "choices": [
                        [
                            "index": 0, "delta": ["content": ""], "finish_reason": "error",
                            "native_finish_reason": "error", "logprobs": nil,
                        ]
                    ],
                ]),
                done,
            ]
        case .cancelled:
            return []
        }
    }
}
