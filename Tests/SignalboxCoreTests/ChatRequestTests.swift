import Foundation
import Testing
@testable import SignalboxCore

func json(_ text: String) -> JSONValue {
    try! JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}

@Suite struct ChatRequestTests {
    @Test func readsModelsStreamAndMaxTokens() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "models": ["c/d", "a/b"], "stream": true, "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}], "tools": [], "temperature": 0.5}
                """))
        #expect(request.models == ["a/b", "c/d"])
        #expect(request.stream)
        #expect(request.maxTokens == 64)
        #expect(request.usedParameters.contains("temperature"))
        #expect(request.promptTokenEstimate > 0)
    }

    @Test func prefersMaxCompletionTokens() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "max_completion_tokens": 10, "max_tokens": 99, "messages": [{"role": "user", "content": "x"}]}
                """))
        #expect(request.maxTokens == 10)
    }

    @Test(arguments: [
        (#"[1, 2]"#, "must be a JSON object"),
        (#"{"messages": [{"role": "user", "content": "x"}]}"#, "'model' is required"),
        (#"{"model": "a/b"}"#, "'messages' is required"),
        (#"{"model": "a/b", "messages": []}"#, "non-empty array"),
        (#"{"model": "a/b", "messages": "hi"}"#, "non-empty array"),
        (#"{"model": "a/b", "messages": [{"role": "wizard", "content": "x"}]}"#, "role"),
        (#"{"model": "a/b", "messages": [{"role": "user"}]}"#, "content is required"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": 5}]}"#, "content must be"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, "'stream'"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#, "max_tokens"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, "temperature"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"sort": "vibes"}}"#, "sort"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"data_collection": "maybe"}}"#, "data_collection"),
    ])
    func rejectsMalformedRequestsWithAMessageThatSaysWhy(body: String, fragment: String) {
        do {
            _ = try ChatRequest(json: json(body))
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func readsProviderPreferences() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "messages": [{"role": "user", "content": "x"}],
                 "provider": {"order": ["OpenAI", "deepinfra/turbo"], "allow_fallbacks": false, "data_collection": "deny",
                              "zdr": true, "sort": {"by": "price"}, "max_price": {"prompt": 1, "completion": "2.5"}}}
                """))
        let preferences = request.provider
        #expect(preferences.order == ["openai", "deepinfra/turbo"])
        #expect(!preferences.allowFallbacks)
        #expect(preferences.denyDataCollection && preferences.zdr)
        #expect(preferences.sort == .price)
        #expect(preferences.maxCompletionPerMillion == ExactDecimal("2.5"))
    }
}
