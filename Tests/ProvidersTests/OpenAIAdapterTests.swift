import Foundation
import NIOCore
import SignalboxCore
import Testing
@testable import Providers

@Suite struct OpenAIAdapterTests {
    let attempt: PlannedAttempt = {
        let provider = ProviderInfo(
            slug: "deepinfra", name: "DeepInfra", format: .openai, baseURL: "http://up/v1/",
            apiKeyEnv: "K", region: "us", dataPolicy: DataPolicy(training: false, retentionDays: 0, zdr: true))
        let endpoint = ModelEndpoint(
            provider: "deepinfra", upstreamModel: "meta-llama/Llama-3.3-70B-Instruct",
            pricing: EndpointPricing(prompt: .zero, completion: .zero), contextLength: 8192,
            maxOutputTokens: 1024, supportedParameters: ["temperature", "top_k"])
        let model = CatalogModel(
            id: "meta-llama/llama-3.3-70b-instruct", name: "Llama", author: "meta-llama",
            contextLength: 8192, endpoints: [endpoint])
        return PlannedAttempt(model: model, endpoint: endpoint, provider: provider)
    }()

    func body(_ request: UpstreamRequest) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(request.body.readableBytesView))
    }

    @Test func forwardsTheClientsBodyWithTheUpstreamModelAndUsageOn() throws {
        let chat = try ChatRequest(
            json: JSONDecoder().decode(
                JSONValue.self,
                from: Data(
                    """
                    {"model": "meta-llama/llama-3.3-70b-instruct", "messages": [{"role": "user", "content": "hi"}],
                     "temperature": 0.2, "logit_bias": {"50256": -100}, "seed": 7, "user": "u-1",
                     "provider": {"sort": "price"}, "models": ["x/y"], "transforms": ["middle-out"]}
                    """.utf8)))
        let request = OpenAIAdapter().makeRequest(chat, attempt: attempt, apiKey: "sk-up")
        #expect(request.url == "http://up/v1/chat/completions")
        #expect(request.headers.contains { $0 == ("authorization", "Bearer sk-up") })
        let sent = try body(request)
        #expect(sent["model"] == "meta-llama/Llama-3.3-70B-Instruct")
        #expect(sent["stream"] == true)
        #expect(sent["stream_options"]?["include_usage"] == true)
        #expect(sent["temperature"] == 0.2)
        #expect(sent["user"] == "u-1")
        // router-only fields never leave; parameters the endpoint lacks are dropped
        for field in ["provider", "models", "transforms", "logit_bias", "seed"] { #expect(sent[field] == nil, "\(field)") }
    }

    @Test func copiesWhatTheClientWroteByteForByteAndKeepsOnlyTheLastOfARepeatedKey() throws {
        // Numbers and nesting as the client wrote them: a re-encoder would turn 1.50e-7 into
        // 1.5e-07 and reorder nothing, but it may not change a byte of what it does not own.
        let text = #"""
            {"m\u006fdel": "meta-llama/llama-3.3-70b-instruct", "messages": [{"role": "user", "content": "h\u00e9"}],
             "metadata": {"k" :  1.50e-7, "nested": [true, null]}, "user": "old", "user": "new",
             "max_tokens": 5, "n": 2.0, "stream_options": {"include_obfuscation": false}, "provider": {"sort": "price"}}
            """#
        let chat = try ChatRequest(bytes: Array(text.utf8))
        let request = OpenAIAdapter().makeRequest(chat, attempt: attempt, apiKey: nil)
        let sent = String(buffer: request.body)
        #expect(sent.contains(#""metadata": {"k" :  1.50e-7, "nested": [true, null]}"#), "\(sent)")
        #expect(sent.contains(#""content": "h\u00e9""#))
        #expect(!sent.contains("old") && !sent.contains("provider") && !sent.contains("m\\u006fdel"), "\(sent)")
        let parsed = try body(request)
        #expect(parsed["model"] == "meta-llama/Llama-3.3-70B-Instruct")
        #expect(parsed["user"] == "new")
        #expect(parsed["max_tokens"] == 5)
        #expect(sent.contains(#""n":2"#) && !sent.contains("2.0"), "the router's reading of n, written as an integer")
        #expect(parsed["stream_options"] == ["include_obfuscation": false, "include_usage": true])
    }

    @Test func decodesChunksUsageAndDone() throws {
        var decoder = OpenAIStreamDecoder()
        let events = try decoder.decode(
            SSEEvent(
                data:
                    #"{"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"end_turn"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#
            ))
        guard case .delta(let delta) = events[0], case .usage(let usage) = events[1] else {
            Issue.record("unexpected events \(events)")
            return
        }
        #expect(delta.upstreamID == "chatcmpl-9")
        #expect(delta.choices[0]["finish_reason"] == "stop")
        #expect(delta.choices[0]["native_finish_reason"] == "end_turn")
        #expect(usage == TokenUsage(promptTokens: 3, completionTokens: 1, cachedTokens: 2))
        guard case .done = try decoder.decode(SSEEvent(data: "[DONE]"))[0] else {
            Issue.record("[DONE] not recognised")
            return
        }
    }

    @Test func anErrorEventOrGarbageIsAFailure() {
        var decoder = OpenAIStreamDecoder()
        do {
            _ = try decoder.decode(SSEEvent(data: #"{"error":{"message":"overloaded"}}"#))
            Issue.record("error event accepted")
        } catch {
            #expect(error.kind == .streamError)
            #expect(error.message == "overloaded")
        }
        do {
            _ = try decoder.decode(SSEEvent(data: "{not json"))
            Issue.record("garbage accepted")
        } catch {
            #expect(error.kind == .malformed)
        }
    }

    @Test func readsProviderErrorBodies() {
        let failure = OpenAIAdapter().failure(
            status: 429, body: ByteBuffer(string: #"{"error":{"message":"Slow down","type":"rate_limit_error"}}"#), retryAfter: 3)
        #expect(failure.message == "Slow down")
        #expect(failure.isRetryable && failure.isRateLimit)
        #expect(failure.retryAfter == 3)
        #expect(failure.clientStatus == 429)
        #expect(!UpstreamFailure(.status(400), "bad").isRetryable)
        #expect(UpstreamFailure(.status(401), "our key").isRetryable)
        #expect(UpstreamFailure(.status(529), "overloaded").clientStatus == 502)
    }
}
