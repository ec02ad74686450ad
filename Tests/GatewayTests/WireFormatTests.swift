import Foundation
import SignalboxCore
import Testing

/// Models whose providers speak Anthropic's or Google's wire format answer exactly like OpenAI models.
@Suite struct WireFormatTests {
    @Test(arguments: ["anthropic/claude-opus-4.7", "google/gemini-2.5-pro"])
    func streamedAndPlainAnswersAgreeAndAreBilled(model: String) async throws {
        try await TestNode.with { node in
            let plain = try await node.chat(model: model)
            #expect(plain.status == 200)
            let json = try #require(plain.json)
            #expect(json["model"]?.stringValue == model)
            let content = try #require(json["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue)
            #expect(!content.isEmpty)
            #expect((json["usage"]?["completion_tokens"]?.intValue ?? 0) > 0)

            let stream = try await node.chat(model: model, stream: true)
            let events = TestNode.events(stream.body)
            #expect(events.last == "[DONE]")
            var text = ""
            for event in events.dropLast() {
                let chunk = try JSONDecoder().decode(JSONValue.self, from: Data(event.utf8))
                text += chunk["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue ?? ""
            }
            #expect(text == content)
            let record = try #require(try await node.generation(json["id"]?.stringValue ?? ""))
            #expect(record.cost > .zero)
        }
    }

    @Test(arguments: [("anthropic/claude-opus-4.7", "Anthropic"), ("google/gemini-2.5-flash", "Google AI Studio")])
    func forcedToolCallsComeBackAsOpenAIToolCalls(model: String, provider: String) async throws {
        try await TestNode.with { node in
            let tools =
                #", "tool_choice": "required", "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}}}]"#
            let reply = try await node.chat(model: model, extra: tools)
            let choice = try #require(reply.json?["choices"]?.arrayValue?.first)
            #expect(reply.json?["provider"]?.stringValue == provider)
            #expect(choice["finish_reason"] == "tool_calls")
            let call = try #require(choice["message"]?["tool_calls"]?.arrayValue?.first)
            #expect(call["function"]?["name"] == "get_weather")
            let arguments = try JSONDecoder().decode(JSONValue.self, from: Data((call["function"]?["arguments"]?.stringValue ?? "").utf8))
            #expect(arguments["city"]?.stringValue != nil && arguments["days"]?.intValue != nil)
        }
    }

    @Test func anOverloadedAnthropicFailsOverToTheNextEndpoint() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "anthropic", "kind": "status", "status": 529}"#)
            let reply = try await node.chat(model: "anthropic/claude-sonnet-4")
            #expect(reply.status == 200)
            #expect(reply.json?["provider"] == "OpenRouter")
            let record = try #require(try await node.generation(reply.json?["id"]?.stringValue ?? ""))
            #expect(record.attempts.map(\.status) == ["529", "200"])
        }
    }

    @Test func anInvalidGeminiKeyIsNotTheClientsFault() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "google-ai-studio", "kind": "status", "status": 401}"#)
            let reply = try await node.chat(model: "google/gemini-2.5-flash")
            #expect(reply.status == 200)
            #expect(reply.json?["provider"] == "OpenRouter")
        }
    }
}

@Suite struct PromptCachingTests {
    static let longText = String(repeating: "Signalbox routes requests across providers and keeps exact books. ", count: 120)

    func costs(_ node: TestNode, model: String, body: String) async throws -> [(usage: JSONValue, cost: Money)] {
        var results: [(JSONValue, Money)] = []
        for _ in 0..<2 {
            let reply = try await node.request("/api/v1/chat/completions", body: body)
            #expect(reply.status == 200, "\(reply.body)")
            let id = reply.json?["id"]?.stringValue ?? ""
            results.append((reply.json?["usage"] ?? nil, try await node.generation(id)?.cost ?? .zero))
        }
        return results
    }

    @Test func anthropicCacheControlWritesThenReadsAndIsBilledAtCachePrices() async throws {
        try await TestNode.with { node in
            let body = """
                {"model": "anthropic/claude-sonnet-4", "max_tokens": 20, "provider": {"only": ["anthropic"]},
                 "messages": [{"role": "system", "content": [{"type": "text", "text": "\(Self.longText)", "cache_control": {"type": "ephemeral"}}]},
                              {"role": "user", "content": "Hello"}]}
                """
            let runs = try await costs(node, model: "anthropic/claude-sonnet-4", body: body)
            let written = runs[0].usage["prompt_tokens_details"]?["cache_write_tokens"]?.intValue ?? 0
            let read = runs[1].usage["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0
            #expect(written > 1000 && read == written)
            #expect(runs[0].usage["prompt_tokens"] == runs[1].usage["prompt_tokens"])
            // a cache write costs 1.25× the prompt price, a read 0.1×: the second run is far cheaper
            #expect(runs[1].cost < runs[0].cost)
        }
    }

    @Test func automaticCachingOfLongPromptsIsReportedAndBilled() async throws {
        try await TestNode.with { node in
            let body = """
                {"model": "openai/gpt-4o-mini", "max_tokens": 20, "provider": {"only": ["openai"]},
                 "messages": [{"role": "user", "content": "\(Self.longText)"}, {"role": "assistant", "content": "Noted."},
                              {"role": "user", "content": "Summarise"}]}
                """
            let runs = try await costs(node, model: "openai/gpt-4o-mini", body: body)
            #expect(runs[0].usage["prompt_tokens_details"]?["cached_tokens"] == 0)
            #expect((runs[1].usage["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0) >= 1024)
            #expect(runs[1].cost < runs[0].cost)
        }
    }
}

@Suite struct MidStreamErrorTests {
    /// Anthropic and OpenAI open with a token-less event (`message_start`, the role chunk);
    /// Gemini's first event already carries text.
    @Test(arguments: [
        ("anthropic/claude-sonnet-4", "anthropic", "OpenRouter", 1), ("google/gemini-2.5-flash", "google-ai-studio", "OpenRouter", 0),
        ("openai/gpt-4o-mini", "openai", "Azure", 1),
    ])
    func anErrorEventBeforeAnyTokenFailsOver(model: String, provider: String, fallback: String, afterChunks: Int) async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "\#(provider)", "kind": "stream_error", "after_chunks": \#(afterChunks)}"#)
            let reply = try await node.chat(model: model, stream: true)
            let first = try JSONParser.parse(TestNode.events(reply.body).first ?? "")
            #expect(first["provider"]?.stringValue == fallback)
            #expect(TestNode.events(reply.body).last == "[DONE]")
        }
    }

    @Test func anOverloadedErrorAfterTokensEndsTheStreamInBand() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "anthropic", "kind": "stream_error", "after_chunks": 6}"#)
            let reply = try await node.chat(model: "anthropic/claude-opus-4.7", stream: true)
            let events = TestNode.events(reply.body)
            let error = try JSONParser.parse(events[events.count - 2])
            #expect(error["error"]?["message"]?.stringValue?.contains("Overloaded") == true)
            #expect(error["choices"]?.arrayValue?.first?["finish_reason"] == "error")
            let record = try #require(try await node.generation(reply.header("X-Generation-Id") ?? ""))
            #expect(record.cost == .zero)
        }
    }
}
