import Foundation
import NIOCore
import SignalboxCore
import Testing
@testable import Providers

func decodeJSON(_ text: String) -> JSONValue { try! JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }

func attempt(format: WireFormat, upstream: String, maxOutput: Int = 8192) -> PlannedAttempt {
    let provider = ProviderInfo(
        slug: "p", name: "P", format: format, baseURL: "http://sim/p/" + (format == .gemini ? "v1beta" : "v1"),
        apiKeyEnv: "K", region: "us", dataPolicy: DataPolicy(training: false, retentionDays: 0, zdr: false))
    let endpoint = ModelEndpoint(
        provider: "p", upstreamModel: upstream, pricing: EndpointPricing(prompt: .zero, completion: .zero),
        contextLength: 200_000, maxOutputTokens: maxOutput)
    return PlannedAttempt(
        model: CatalogModel(id: "a/m", name: "M", author: "a", contextLength: 200_000, endpoints: [endpoint]),
        endpoint: endpoint, provider: provider)
}

let toolConversation = """
    {"model": "a/m", "temperature": 1.7, "stop": "END", "tool_choice": "required",
     "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
     "messages": [
       {"role": "system", "content": "Be terse."},
       {"role": "user", "content": "Weather in Paris?"},
       {"role": "user", "content": [{"type": "text", "text": "And look:"},
                                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
       {"role": "assistant", "content": "", "tool_calls": [{"id": "call.1", "type": "function",
                                                             "function": {"name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}}]},
       {"role": "tool", "tool_call_id": "call.1", "content": "{\\"temp\\": 21}"},
       {"role": "user", "content": "Thanks"}]}
    """

@Suite struct AnthropicAdapterTests {
    func request() throws -> (UpstreamRequest, JSONValue) {
        let chat = try ChatRequest(json: decodeJSON(toolConversation))
        let request = AnthropicAdapter().makeRequest(
            chat, attempt: attempt(format: .anthropic, upstream: "claude-x", maxOutput: 4096), apiKey: "sk-ant")
        return (request, try JSONDecoder().decode(JSONValue.self, from: Data(request.body.readableBytesView)))
    }

    @Test func sendsAMessagesRequestWithItsHeadersAndRequiredMaxTokens() throws {
        let (request, body) = try request()
        #expect(request.url == "http://sim/p/v1/messages")
        #expect(request.headers.contains { $0 == ("x-api-key", "sk-ant") })
        #expect(request.headers.contains { $0 == ("anthropic-version", "2023-06-01") })
        #expect(body["model"] == "claude-x")
        #expect(body["max_tokens"] == 4096)
        #expect(body["stream"] == true)
        #expect(body["temperature"] == 1.0)  // clamped to Anthropic's range
        #expect(body["stop_sequences"] == ["END"])
        #expect(body["tool_choice"] == ["type": "any"])
        #expect(body["tools"]?.arrayValue?.first?["input_schema"]?["required"] == ["city"])
    }

    @Test func hoistsSystemMergesTurnsAndCarriesToolCallsAsBlocks() throws {
        let (_, body) = try request()
        #expect(body["system"] == [["type": "text", "text": "Be terse."]])
        let messages = try #require(body["messages"]?.arrayValue)
        #expect(messages.map { $0["role"]?.stringValue } == ["user", "assistant", "user"])
        let first = try #require(messages[0]["content"]?.arrayValue)
        #expect(first.count == 3)  // two user messages merged: text, text, image
        #expect(first[2]["source"] == ["type": "base64", "media_type": "image/png", "data": "iVBORw0K"])
        let toolUse = try #require(messages[1]["content"]?.arrayValue?.first)
        #expect(toolUse["type"] == "tool_use" && toolUse["id"] == "call_1" && toolUse["input"] == ["city": "Paris"])
        let last = try #require(messages[2]["content"]?.arrayValue)
        #expect(last[0]["type"] == "tool_result" && last[0]["tool_use_id"] == "call_1")
        #expect(last[1]["text"] == "Thanks")
    }

    @Test func translatesTheEventStreamIntoOpenAIDeltas() throws {
        var decoder = AnthropicStreamDecoder()
        let events: [(String, String)] = [
            (
                "message_start",
                #"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":20,"output_tokens":1,"cache_read_input_tokens":5,"cache_creation_input_tokens":3}}}"#
            ),
            ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
            ("ping", #"{"type":"ping"}"#),
            ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking"}}"#),
            (
                "content_block_start",
                #"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}}"#
            ),
            (
                "content_block_delta",
                #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#
            ),
            (
                "content_block_delta",
                #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#
            ),
            ("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":42}}"#),
            ("message_stop", #"{"type":"message_stop"}"#),
        ]
        var accumulator = CompletionAccumulator()
        var usage: TokenUsage?
        var done = false
        for (name, data) in events {
            for event in try decoder.decode(SSEEvent(event: name, data: data)) {
                switch event {
                case .delta(let delta): accumulator.add(delta)
                case .usage(let reported): usage = reported
                case .done: done = true
                }
            }
        }
        #expect(done)
        #expect(usage == TokenUsage(promptTokens: 28, completionTokens: 42, cachedTokens: 5, cacheWriteTokens: 3))
        let choice = accumulator.completedChoices()[0]
        #expect(choice["finish_reason"] == "tool_calls" && choice["native_finish_reason"] == "tool_use")
        #expect(choice["message"]?["content"] == "Checking")
        let call = choice["message"]?["tool_calls"]?.arrayValue?.first
        #expect(call?["id"] == "toolu_9" && call?["function"]?["arguments"] == #"{"city":"Paris"}"#)
        #expect(accumulator.upstreamID == "msg_1")
    }

    @Test func anOverloadedErrorEventIsARetryableStreamFailure() {
        var decoder = AnthropicStreamDecoder()
        do {
            _ = try decoder.decode(
                SSEEvent(event: "error", data: #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#))
            Issue.record("error event accepted")
        } catch {
            #expect(error.kind == .streamError && error.isRetryable && error.message == "Overloaded")
        }
        let failure = AnthropicAdapter().failure(
            status: 529, body: ByteBuffer(string: #"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            retryAfter: nil)
        #expect(failure.isRetryable && failure.clientStatus == 502 && failure.message == "Overloaded")
    }
}

@Suite struct GeminiAdapterTests {
    func request() throws -> (UpstreamRequest, JSONValue) {
        var json = decodeJSON(toolConversation).objectValue!
        json["max_tokens"] = 256
        json["response_format"] = ["type": "json_object"]
        let chat = try ChatRequest(json: .object(json))
        let request = GeminiAdapter().makeRequest(chat, attempt: attempt(format: .gemini, upstream: "gemini-2.5-flash"), apiKey: "AIza")
        return (request, try JSONDecoder().decode(JSONValue.self, from: Data(request.body.readableBytesView)))
    }

    @Test func sendsAStreamingGenerateContentRequest() throws {
        let (request, body) = try request()
        #expect(request.url == "http://sim/p/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        #expect(request.headers.contains { $0 == ("x-goog-api-key", "AIza") })
        #expect(body["systemInstruction"] == ["parts": [["text": "Be terse."]]])
        let generation = try #require(body["generationConfig"])
        #expect(generation["maxOutputTokens"] == 256 && generation["temperature"] == 1.7 && generation["stopSequences"] == ["END"])
        #expect(generation["responseMimeType"] == "application/json")
        #expect(body["toolConfig"] == ["functionCallingConfig": ["mode": "ANY"]])
    }

    @Test func mapsRolesAndFindsToolResultNamesThroughTheCallID() throws {
        let (_, body) = try request()
        let contents = try #require(body["contents"]?.arrayValue)
        #expect(contents.map { $0["role"]?.stringValue } == ["user", "model", "user"])
        #expect(contents[0]["parts"]?.arrayValue?[2]["inlineData"] == ["mimeType": "image/png", "data": "iVBORw0K"])
        #expect(contents[1]["parts"]?.arrayValue?.first?["functionCall"] == ["name": "get_weather", "args": ["city": "Paris"]])
        let response = contents[2]["parts"]?.arrayValue?.first?["functionResponse"]
        #expect(response == ["name": "get_weather", "response": ["temp": 21]])
    }

    @Test func readsChunksWholeFunctionCallsAndUsage() throws {
        var decoder = GeminiStreamDecoder()
        var accumulator = CompletionAccumulator()
        var usage: TokenUsage?
        var done = false
        for data in [
            #"{"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":5},"responseId":"r1"}"#,
            #"{"candidates":[{"content":{"parts":[{"text":"lo"},{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":4,"thoughtsTokenCount":10,"cachedContentTokenCount":2},"responseId":"r1"}"#,
        ] {
            for event in try decoder.decode(SSEEvent(data: data)) {
                switch event {
                case .delta(let delta): accumulator.add(delta)
                case .usage(let reported): usage = reported
                case .done: done = true
                }
            }
        }
        #expect(done)
        #expect(usage == TokenUsage(promptTokens: 5, completionTokens: 14, cachedTokens: 2, reasoningTokens: 10))
        let choice = accumulator.completedChoices()[0]
        #expect(choice["message"]?["content"] == "Hello")
        #expect(choice["finish_reason"] == "tool_calls" && choice["native_finish_reason"] == "STOP")
        let call = choice["message"]?["tool_calls"]?.arrayValue?.first
        #expect(call?["id"]?.stringValue?.hasPrefix("call_") == true && call?["function"]?["arguments"] == #"{"city":"Paris"}"#)
    }

    @Test func anInvalidKeyIsOurCredentialAndRetryDelayIsRead() {
        let invalid = GeminiAdapter().failure(
            status: 400,
            body: ByteBuffer(
                string:
                    #"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#
            ), retryAfter: nil)
        #expect(invalid.kind == .status(401) && invalid.isRetryable)
        let limited = GeminiAdapter().failure(
            status: 429,
            body: ByteBuffer(
                string:
                    #"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"22s"}]}}"#
            ), retryAfter: nil)
        #expect(limited.retryAfter == 22 && limited.isRateLimit)
    }
}

@Suite struct ReasoningTranslationTests {
    let chat = try! ChatRequest(
        json: decodeJSON(
            """
            {"model": "a/m", "max_tokens": 10000, "temperature": 0.3, "top_k": 5,
             "reasoning": {"effort": "high"}, "messages": [{"role": "user", "content": "Think"}]}
            """))

    func body(_ request: UpstreamRequest) throws -> JSONValue { try JSONParser.parse(request.body.readableBytesView) }

    @Test func effortBecomesAnAnthropicThinkingBudgetWithoutSamplingOverrides() throws {
        let sent = try body(
            AnthropicAdapter().makeRequest(chat, attempt: attempt(format: .anthropic, upstream: "c", maxOutput: 64000), apiKey: nil))
        #expect(sent["thinking"] == ["type": "enabled", "budget_tokens": 8000])  // 80% of max_tokens for "high"
        #expect(sent["temperature"] == nil && sent["top_k"] == nil)
    }

    @Test func effortBecomesAGeminiThinkingConfig() throws {
        let sent = try body(GeminiAdapter().makeRequest(chat, attempt: attempt(format: .gemini, upstream: "g"), apiKey: nil))
        #expect(sent["generationConfig"]?["thinkingConfig"] == ["thinkingBudget": 8000, "includeThoughts": true])
    }

    @Test func effortBecomesOpenAIsReasoningEffort() throws {
        var reasoningAttempt = attempt(format: .openai, upstream: "o")
        reasoningAttempt.endpoint.supportedParameters = ["reasoning", "temperature", "top_k"]
        let sent = try body(OpenAIAdapter().makeRequest(chat, attempt: reasoningAttempt, apiKey: nil))
        #expect(sent["reasoning_effort"] == "high" && sent["reasoning"] == nil)
    }

    @Test func budgetsRespectAnthropicsMinimumAndTheOutputLimit() {
        #expect(ReasoningRequest(effort: .low).budget(outputLimit: 2000) == 1024)
        #expect(ReasoningRequest(effort: .high).budget(outputLimit: 1000) == nil)  // no room to think
        #expect(ReasoningRequest(maxTokens: 3000).budget(outputLimit: 64000) == 3000)
        #expect(ReasoningRequest(effort: ReasoningRequest.Effort.none, enabled: false).budget(outputLimit: 64000) == nil)
    }

    @Test func deepSeekStyleReasoningContentIsReadAsReasoning() throws {
        var decoder = OpenAIStreamDecoder()
        let events = try decoder.decode(SSEEvent(data: #"{"id":"x","choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#))
        guard case .delta(let delta) = events.first else {
            Issue.record("no delta")
            return
        }
        #expect(delta.choices[0]["delta"] == ["reasoning": "hmm"])
    }
}

/// A chat file part (a PDF) reaches Anthropic as a document block and Gemini as inline data or a
/// file reference, rather than being dropped.
@Suite struct FilePartTranslationTests {
    let chat = try! ChatRequest(
        json: decodeJSON(
            """
            {"model": "a/m", "messages": [{"role": "user", "content": [
              {"type": "text", "text": "Summarize"},
              {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
              {"type": "file", "file": {"filename": "b.pdf", "file_url": "https://example.com/b.pdf"}}]}]}
            """))

    func body(_ request: UpstreamRequest) throws -> JSONValue {
        try JSONParser.parse(request.body.readableBytesView)
    }

    @Test func anthropicGetsDocumentBlocks() throws {
        let sent = try body(AnthropicAdapter().makeRequest(chat, attempt: attempt(format: .anthropic, upstream: "c"), apiKey: nil))
        let blocks = sent["messages"]?.arrayValue?.first?["content"]?.arrayValue ?? []
        #expect(blocks.map { $0["type"]?.stringValue } == ["text", "document", "document"])
        #expect(blocks[1]["source"] == ["type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"])
        #expect(blocks[2]["source"] == ["type": "url", "url": "https://example.com/b.pdf"])
    }

    @Test func geminiGetsInlineDataAndAFileReference() throws {
        let sent = try body(GeminiAdapter().makeRequest(chat, attempt: attempt(format: .gemini, upstream: "g"), apiKey: nil))
        let parts = sent["contents"]?.arrayValue?.first?["parts"]?.arrayValue ?? []
        #expect(parts.count == 3)
        #expect(parts[1]["inlineData"] == ["mimeType": "application/pdf", "data": "JVBERi0x"])
        #expect(parts[2]["fileData"]?["fileUri"] == "https://example.com/b.pdf")
    }
}
