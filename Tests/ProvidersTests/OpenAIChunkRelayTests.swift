import NIOCore
import Testing

@testable import Providers
@testable import SignalboxCore

/// The byte relay writes what the full decode-and-encode path writes (plus the upstream's extra
/// fields), counts the same output, and hands everything it should not relay to the full path.
@Suite struct OpenAIChunkRelayTests {
    let relay = OpenAIChunkRelay(
        generationID: "gen-1", provider: "OpenAI", model: "openai/gpt-4o-mini", created: 1_700_000_000, excludeReasoning: false)

    static let relayedChunks = [
        #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini-2024","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
        #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hello \"world\"\n\u00e9"},"finish_reason":null}]}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"finish_reason":null}]}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"function_call"},{"index":1,"delta":{"content":"x"},"finish_reason":"content_filter","logprobs":{"content":[]}}]}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{"reasoning":"thinking…"},"finish_reason":null}]}"#,
        #"{"id":"c","service_tier":"default","choices":[{"index":0,"delta":{"content":"a"},"native_finish_reason":"bogus","finish_reason":null}],"provider":"spoofed"}"#,
        #"  {"id" : "c" , "choices" : [ { "index" : 0 , "delta" : { "content" : "spaced" } , "finish_reason" : "length" } ] }  "#,
    ]

    @Test(arguments: relayedChunks) func writesWhatTheFullPathWrites(_ chunk: String) throws {
        var out: [UInt8] = []
        let relayed = try #require(relay(chunk, into: &out))
        let written = try #require(Self.event(out))

        var decoder = OpenAIStreamDecoder()
        let events = try decoder.decode(SSEEvent(data: chunk))
        guard case .delta(let delta)? = events.first else { throw Unexpected() }
        var expected: JSONObject = [
            "id": "gen-1", "provider": "OpenAI", "model": "openai/gpt-4o-mini", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "choices": .array(delta.choices),
        ]
        // As `ChatResponses.writeChunk` writes it: the upstream's fingerprint, when a string, and nothing
        // else of the upstream's top level.
        if let fingerprint = delta.systemFingerprint { expected["system_fingerprint"] = .string(fingerprint) }
        #expect(written == .object(expected))
        #expect(relayed.pieces == delta.outputPieces)
        #expect(relayed.finishReason == delta.finishReason)
        let usage = events.compactMap { if case .usage(let usage) = $0 { usage } else { nil } }.first
        #expect(relayed.usage == usage)
    }

    @Test func collectedPartsAssembleTheAnswerTheFullPathAssembles() throws {
        // The relayed chunks in order, as one stream: both ways must assemble the same completion.
        var decoder = OpenAIStreamDecoder()
        var viaDecoder = CompletionAccumulator()
        var viaScanner = CompletionAccumulator()
        for chunk in Self.relayedChunks + [
            #"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            #"{"id":"c","choices":[{"index":1,"delta":{"role":"assistant","refusal":"no \u00e9"},"finish_reason":null}]}"#,
        ] {
            for event in try decoder.decode(SSEEvent(data: chunk)) {
                if case .delta(let delta) = event { viaDecoder.add(delta) }
            }
            var out: [UInt8] = []
            var copy = chunk
            let relayed = try #require(copy.withUTF8 { relay.relay(UnsafeRawBufferPointer($0), identity: true, collect: true, into: &out) })
            viaScanner.noteIdentity(upstreamID: relayed.upstreamID, systemFingerprint: relayed.systemFingerprint)
            for part in relayed.parts { viaScanner.add(part) }
        }
        #expect(viaScanner.completedChoices() == viaDecoder.completedChoices())
        #expect(viaScanner.upstreamID == viaDecoder.upstreamID && viaScanner.systemFingerprint == viaDecoder.systemFingerprint)
        #expect(viaScanner.finishReason == viaDecoder.finishReason)
        #expect(viaScanner.completedChoices().count == 2)
    }

    @Test func aUsageChunkWithoutChoicesWritesNothingAndReportsTheUsage() throws {
        var out = Array("earlier events\n\n".utf8)
        let chunk =
            #"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":2}}}"#
        let relayed = try #require(relay(chunk, into: &out))
        #expect(!relayed.wroteEvent)
        #expect(String(decoding: out, as: UTF8.self) == "earlier events\n\n")
        #expect(relayed.usage?.promptTokens == 5 && relayed.usage?.completionTokens == 7 && relayed.usage?.cachedTokens == 2)
    }

    @Test func theUpstreamIdentityIsReadOnlyWhenAskedFor() throws {
        var out: [UInt8] = []
        let chunk = Self.relayedChunks[0]
        let asked = try #require(relay(chunk, identity: true, into: &out))
        #expect(asked.upstreamID == "chatcmpl-1" && asked.systemFingerprint == "fp_1")
        let notAsked = try #require(relay(chunk, identity: false, into: &out))
        #expect(notAsked.upstreamID == nil)
    }

    @Test func anUpstreamCannotHideOutputOrSmuggleFields() throws {
        // Escaped keys where output is counted, a repeated finish or content, an escaped error
        // object, a line break from a multi-line event: all go to the full decoder, which reads
        // them as a client's parser would.
        for chunk in [
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"\u0066unction":{"arguments":"x"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"\u0061rguments":"x"}}]}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":"A","content":"B"}}]}"#,
            #"{"choices":[{"index":0,"delta":{},"finish_reason":"stop","finish_reason":null}]}"#,
            #"{"choices":[],"choices":[{"index":0,"delta":{"content":"x"}}]}"#,
            #"{"object":"\u0065rror","message":"x","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            "{\"choices\":[{\"index\":0,\"delta\":{\n\"content\":\"x\"}}]}",
        ] {
            var out: [UInt8] = []
            #expect(relay(chunk, into: &out) == nil, "relayed: \(chunk)")
        }
        // The upstream's own top-level fields never reach the client.
        var out: [UInt8] = []
        let chunk =
            #"{"id":"c","service_tier":"x","cost":9,"system_fingerprint":{"not":"a string"},"#
            + #""choices":[{"index":0,"delta":{"content":"a"}}]}"#
        _ = try #require(relay(chunk, into: &out))
        let written = try #require(Self.event(out)?.objectValue)
        #expect(Set(written.map(\.key)) == ["id", "provider", "model", "object", "created", "choices"])
    }

    @Test func everyChoiceIsReportedSoAnUnfinishedOneIsSeen() throws {
        var out: [UInt8] = []
        let chunk = #"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{},"finish_reason":"stop"}]}"#
        let relayed = try #require(relay(chunk, into: &out))
        #expect(relayed.parts.map(\.index) == [0, 1])
        #expect(relayed.parts.map(\.finishReason) == [nil, "stop"])
        var accumulator = CompletionAccumulator()
        for part in relayed.parts { accumulator.add(part) }
        #expect(accumulator.finishReason == nil, "choice 0 has not finished")
    }

    static let fullPathChunks = [
        #"{"error":{"message":"overloaded","code":529}}"#,
        #"{"object":"error","message":"bad"}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"deepseek style"}}]}"#,
        #"{"id":"c","\u0069d":"escaped key","choices":[]}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{"content":"cut"#,
        #"{"id":"c"}"#,
        #"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"st\u006fp"}]}"#,
        #"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}]}"#,
        "not json at all",
    ]

    @Test(arguments: fullPathChunks) func leavesTheRestToTheFullDecoder(_ chunk: String) {
        var out = Array("kept".utf8)
        #expect(relay(chunk, into: &out) == nil)
        #expect(String(decoding: out, as: UTF8.self) == "kept", "nothing half-written")
    }

    @Test func excludedReasoningGoesToTheFullDecoder() {
        let excluding = OpenAIChunkRelay(generationID: "g", provider: "p", model: "m", created: 0, excludeReasoning: true)
        var out: [UInt8] = []
        var chunk = #"{"id":"c","choices":[{"index":0,"delta":{"reasoning":"hidden"}}]}"#
        #expect(chunk.withUTF8 { excluding.relay(UnsafeRawBufferPointer($0), identity: false, into: &out) } == nil)
    }

    func relay(_ chunk: String, identity: Bool = false, into out: inout [UInt8]) -> OpenAIChunkRelay.Relayed? {
        var copy = chunk
        return copy.withUTF8 { relay.relay(UnsafeRawBufferPointer($0), identity: identity, into: &out) }
    }

    /// The one SSE event in `buffer`, parsed.
    static func event(_ bytes: [UInt8]) -> JSONValue? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.hasPrefix("data: "), text.hasSuffix("\n\n") else { return nil }
        return try? JSONParser.parse(String(text.dropFirst(6).dropLast(2)))
    }

    struct Unexpected: Error {}
}

extension OpenAIChunkRelay.Relayed: Equatable {
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.pieces == rhs.pieces && lhs.wroteEvent == rhs.wroteEvent && lhs.finishReason == rhs.finishReason && lhs.usage == rhs.usage
    }
}
