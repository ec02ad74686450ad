import NIOCore
import Providers
import SignalboxCore
import Testing

@testable import Gateway

/// The front translators, fed chat SSE exactly as the pipeline writes it.
@Suite struct SurfaceStreamTests {
    static func chunk(_ choices: JSONValue, usage: JSONValue? = nil) -> String {
        var object: JSONObject = ["id": "gen-1", "object": "chat.completion.chunk", "model": "m", "choices": choices]
        if let usage { object["usage"] = usage }
        return "data: " + JSONWriter.string(.object(object)) + "\n\n"
    }

    static func call(_ index: Int, id: String? = nil, name: String? = nil, arguments: String) -> JSONValue {
        var function: JSONObject = ["arguments": .string(arguments)]
        if let name { function["name"] = .string(name) }
        var call: JSONObject = ["index": .int(Int64(index)), "function": .object(function)]
        if let id { call["id"] = .string(id) }
        return .object(call)
    }

    static let usage: JSONValue = ["prompt_tokens": 10, "completion_tokens": 5, "cost": 0.001]

    /// Two parallel calls whose fragments interleave (`first` gets `{"x":1}`, `second` `{"y":2}`).
    static let interleavedCalls =
        Self.chunk([["index": 0, "delta": ["tool_calls": [Self.call(0, id: "a", name: "first", arguments: "")]]]])
        + Self.chunk([["index": 0, "delta": ["tool_calls": [Self.call(1, id: "b", name: "second", arguments: "")]]]])
        + Self.chunk([["index": 0, "delta": ["tool_calls": [Self.call(0, arguments: #"{"x":"#)]]]])
        + Self.chunk([["index": 0, "delta": ["tool_calls": [Self.call(1, arguments: #"{"y":2}"#)]]]])
        + Self.chunk([["index": 0, "delta": ["tool_calls": [Self.call(0, arguments: "1}")]], "finish_reason": "tool_calls"]])
        + Self.chunk([], usage: Self.usage) + "data: [DONE]\n\n"

    /// `(event name, data)` of every SSE event in `bytes`.
    static func events(_ bytes: ByteBuffer) throws -> [(String?, JSONValue)] {
        var parser = SSEParser()
        return try parser.feed(bytes).map { ($0.event, try JSONParser.parse($0.data)) }
    }

    @Test func parallelToolCallsThatInterleaveBecomeWholeBlocksInOrder() throws {
        var stream = AnthropicMessageStream(generationID: "gen-1", model: "m")
        let events = try Self.events(stream.translate(ByteBuffer(string: Self.interleavedCalls)))
        // Each block opens, gets its whole input and closes before the next one opens.
        var inputs: [Int: String] = [:]
        var open: Int?
        var names: [String] = []
        for (name, data) in events {
            let index = data["index"]?.intValue
            switch name {
            case "content_block_start":
                #expect(open == nil, "a block opened inside another")
                open = index
                names.append(data["content_block"]?["name"]?.stringValue ?? "")
            case "content_block_delta":
                #expect(index == open)
                inputs[index!, default: ""] += data["delta"]?["partial_json"]?.stringValue ?? ""
            case "content_block_stop":
                #expect(index == open)
                open = nil
            default: break
            }
        }
        #expect(names == ["first", "second"])
        #expect(inputs == [0: #"{"x":1}"#, 1: #"{"y":2}"#])
        #expect(events.map(\.0).suffix(2) == ["message_delta", "message_stop"])
        #expect(events.first { $0.0 == "message_delta" }?.1["delta"]?["stop_reason"] == "tool_use")
    }

    @Test func anErrorAfterOutputEndsTheMessageStreamWithAnAnthropicErrorEvent() throws {
        var stream = AnthropicMessageStream(generationID: "gen-1", model: "m")
        let failure: JSONValue = [
            "id": "gen-1", "error": ["code": 502, "message": "Provider returned error", "metadata": ["provider_code": "529"]],
            "choices": [["index": 0, "delta": ["content": ""], "finish_reason": "error"]],
        ]
        let text = Self.chunk([["index": 0, "delta": ["content": "Hel"]]]) + "data: " + JSONWriter.string(failure) + "\n\ndata: [DONE]\n\n"
        let events = try Self.events(stream.translate(ByteBuffer(string: text)))
        #expect(events.last?.0 == "error")
        #expect(events.last?.1["error"]?["type"] == "overloaded_error")
        #expect(!events.contains { $0.0 == "message_stop" })
    }

    @Test func theResponsesStreamNumbersEveryEventAndCompletesWithEveryItem() throws {
        var stream = ResponsesEventStream(id: "gen-1", model: "m")
        let text =
            Self.chunk([["index": 0, "delta": ["reasoning": "think"]]])
            + Self.chunk([["index": 0, "delta": ["content": "Hi"]]])
            + Self.chunk([
                ["index": 0, "delta": ["tool_calls": [Self.call(0, id: "c", name: "f", arguments: "{}")]], "finish_reason": "tool_calls"]
            ])
            + Self.chunk([], usage: Self.usage) + "data: [DONE]\n\n"
        let events = try Self.events(stream.opening) + Self.events(stream.translate(ByteBuffer(string: text)))
        #expect(events.map { $0.1["sequence_number"]?.intValue } == Array(0..<events.count).map { Optional($0) })
        #expect(events.last?.0 == "response.completed")
        let output = events.last?.1["response"]?["output"]?.arrayValue ?? []
        #expect(output.map { $0["type"]?.stringValue } == ["reasoning", "message", "function_call"])
        #expect(events.filter { $0.0 == "response.output_item.added" }.count == 3)
        #expect(events.filter { $0.0 == "response.output_item.done" }.count == 3)
    }

    @Test func aLegacyStreamKeepsTextFinishAndUsageAndDropsTheRest() throws {
        var stream = LegacyCompletionStream()
        let text =
            Self.chunk([["index": 0, "delta": ["role": "assistant", "content": ""]]])
            + Self.chunk([["index": 0, "delta": ["reasoning": "hm"]]])
            + Self.chunk([["index": 0, "delta": ["content": "Hi"]], ["index": 1, "delta": ["content": "Yo"]]])
            + Self.chunk([["index": 0, "delta": [:], "finish_reason": "stop"]])
            + Self.chunk([], usage: Self.usage) + "data: [DONE]\n\n"
        var parser = SSEParser()
        let events = try parser.feed(stream.translate(ByteBuffer(string: text)))
        #expect(events.last?.data == "[DONE]")
        let chunks = try events.dropLast().map { try JSONParser.parse($0.data) }
        #expect(chunks.map { $0["choices"]?.arrayValue?.compactMap { $0["text"]?.stringValue } ?? [] } == [["Hi", "Yo"], [""], []])
        #expect(chunks.allSatisfy { $0["object"] == "text_completion" })
        #expect(chunks.last?["usage"]?["completion_tokens"] == 5)
    }
}

extension SurfaceStreamTests {
    @Test func parallelToolCallsThatInterleaveBecomeWholeResponsesItems() throws {
        var stream = ResponsesEventStream(id: "gen-1", model: "m")
        let events = try Self.events(stream.translate(ByteBuffer(string: Self.interleavedCalls)))
        let added = events.filter { $0.0 == "response.output_item.added" }.map { $0.1["item"]?["call_id"]?.stringValue }
        #expect(added == ["a", "b"], "one item per call, never reopened")
        let output = events.last?.1["response"]?["output"]?.arrayValue ?? []
        #expect(output.map { $0["arguments"]?.stringValue } == [#"{"x":1}"#, #"{"y":2}"#])
        #expect(output.map { $0["name"]?.stringValue } == ["first", "second"])
    }
}
