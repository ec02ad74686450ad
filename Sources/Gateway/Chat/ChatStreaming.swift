import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

extension RouterAPI {
    // MARK: Streams and replays


    /// A stored completion, streamed as if it were new: its message in one chunk, the finish
    /// chunk, the usage chunk and `[DONE]`.
    static func replayStream(_ completion: JSONValue) -> Response {
        var common: JSONObject = ["object": "chat.completion.chunk"]
        for field in ["id", "provider", "model", "created", "system_fingerprint"] { common[field] = completion[field] }
        var events: [ByteBuffer] = [ByteBuffer(string: ": SIGNALBOX PROCESSING\n\n")]
        for choice in completion["choices"]?.arrayValue ?? [] {
            var delta = choice["message"]?.objectValue ?? JSONObject()
            if let calls = delta["tool_calls"]?.arrayValue {
                delta["tool_calls"] = .array(calls.enumerated().map { index, call in
                    var indexed = call.objectValue ?? JSONObject()
                    indexed["index"] = .int(Int64(index))
                    return .object(indexed)
                })
            }
            var chunk = common
            chunk["choices"] = [["index": choice["index"] ?? 0, "delta": .object(delta), "finish_reason": nil, "logprobs": nil]]
            events.append(sse(.object(chunk)))
            chunk["choices"] = [["index": choice["index"] ?? 0, "delta": [:], "finish_reason": choice["finish_reason"] ?? nil,
                                 "native_finish_reason": choice["native_finish_reason"] ?? nil, "logprobs": nil]]
            events.append(sse(.object(chunk)))
        }
        var usage = common
        usage["choices"] = []
        usage["usage"] = completion["usage"] ?? nil
        events.append(sse(.object(usage)))
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        var body = ByteBuffer()
        for var event in events { body.writeBuffer(&event) }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: .init(byteBuffer: body))
    }

    /// An SSE response: a processing comment at once and every few seconds until the first
    /// token, each upstream delta re-labelled and written as it arrives, then the usage chunk
    /// and `[DONE]`. A client that hangs up cancels the upstream call.
    func streamResponse(_ prepared: PreparedChat) -> Response {
        let pipeline = self.pipeline
        let keepAlive = dependencies.configuration.keepAliveInterval
        let header = ByteBuffer(string: ": SIGNALBOX PROCESSING\n\n")
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
            body: ResponseBody { writer in
                do {
                    try await writer.write(header)
                } catch {
                    await pipeline.cancel(prepared)  // the client left before anything ran
                    throw error
                }
                let (events, continuation) = AsyncStream<ByteBuffer>.makeStream()
                let firstData = NIOLockedValueBox(false)
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let outcome = await pipeline.run(prepared) { delta, attempt in
                            firstData.withLockedValue { $0 = true }
                            continuation.yield(Self.chunk(delta, prepared: prepared, attempt: attempt))
                        }
                        for buffer in Self.closingEvents(outcome, prepared: prepared) { continuation.yield(buffer) }
                        continuation.finish()
                    }
                    group.addTask {
                        while !firstData.withLockedValue({ $0 }) {
                            try await Task.sleep(for: keepAlive)
                            if !firstData.withLockedValue({ $0 }) { continuation.yield(header) }
                        }
                    }
                    do {
                        for await buffer in events { try await writer.write(buffer) }
                    } catch {
                        group.cancelAll()  // the client is gone: cancel the upstream call
                        continuation.finish()
                    }
                    group.cancelAll()
                    try? await group.waitForAll()
                }
                try await writer.finish(nil)
            })
    }

    static func sse(_ value: JSONValue) -> ByteBuffer {
        var bytes = Array("data: ".utf8)
        JSONWriter.write(value, into: &bytes)
        bytes.append(contentsOf: "\n\n".utf8)
        return ByteBuffer(bytes: bytes)
    }

    static func chunk(_ delta: CompletionDelta, prepared: PreparedChat, attempt: PlannedAttempt) -> ByteBuffer {
        var object: JSONObject = [
            "id": .string(prepared.generationID), "provider": .string(attempt.provider.name),
            "model": .string(attempt.model.id), "object": "chat.completion.chunk", "created": .int(prepared.created),
        ]
        if let fingerprint = delta.systemFingerprint { object["system_fingerprint"] = .string(fingerprint) }
        object["choices"] = .array(delta.choices)
        return sse(.object(object))
    }

    static func closingEvents(_ outcome: ChatPipeline.RequestOutcome, prepared: PreparedChat) -> [ByteBuffer] {
        switch outcome {
        case .success(let result, let cost):
            let usage = result.usage ?? TokenUsage()
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
                    "model": .string(result.attempt.model.id), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "choices": [], "usage": ChatPipeline.usageJSON(usage, cost: cost),
                ]),
                ByteBuffer(string: "data: [DONE]\n\n"),
            ]
        case .failure(let error, _):
            let provider = error.metadata?["provider_name"] ?? nil
            guard case .object(let errorBody)? = error.body["error"] else { return [] }
            return [
                sse([
                    "id": .string(prepared.generationID), "provider": provider,
                    "model": .string(prepared.request.requestedModel), "object": "chat.completion.chunk",
                    "created": .int(prepared.created), "error": .object(errorBody),
                    "choices": [["index": 0, "delta": ["content": ""], "finish_reason": "error",
                                 "native_finish_reason": "error", "logprobs": nil]],
                ]),
                ByteBuffer(string: "data: [DONE]\n\n"),
            ]
        case .cancelled:
            return []
        }
    }
}
