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
