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
            let tools = #", "tool_choice": "required", "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}}}]"#
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
