import Testing
@testable import SignalboxCore

@Suite struct ShippedCatalogTests {
    let catalog = try! Catalog.shipped()

    @Test func hasAtLeastFortyModelsFromEightAuthors() {
        #expect(catalog.models.count >= 40)
        #expect(Set(catalog.models.map(\.author)).count >= 8)
        #expect(catalog.models.filter(\.isFreeVariant).count >= 8)
    }

    @Test(arguments: [
        "openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash",
        "meta-llama/llama-3.3-70b-instruct", "deepseek/deepseek-chat",
    ])
    func popularModelsHaveTwoProvidersForFailover(id: String) throws {
        let model = try #require(catalog.model(id: id))
        #expect(Set(model.endpoints.map(\.provider)).count >= 2)
    }

    @Test func embeddingsModelsSayHowLongTheirVectorsAre() {
        let embeddings = catalog.models.filter(\.isEmbeddings)
        #expect(embeddings.count >= 5)
        #expect(Set(embeddings.map(\.author)).count >= 3)
        for model in embeddings { #expect((model.embeddingDimensions ?? 0) > 0, "\(model.id)") }
    }

    @Test func freeVariantsCostNothing() {
        for model in catalog.models where model.isFreeVariant {
            #expect(model.endpoints.allSatisfy { $0.pricing.isFree }, "\(model.id)")
        }
    }

    @Test func everyEndpointIsComplete() throws {
        try catalog.validate()
        for model in catalog.models {
            #expect(model.contextLength > 0)
            #expect(Set(model.endpoints.map(\.tag)).count == model.endpoints.count, "duplicate tag in \(model.id)")
            for endpoint in model.endpoints {
                // An embeddings endpoint has no output tokens; every other one has some.
                #expect(
                    model.isEmbeddings
                        ? endpoint.maxOutputTokens == 0 && endpoint.pricing.completion.isZero
                        : endpoint.maxOutputTokens > 0 && endpoint.maxOutputTokens <= endpoint.contextLength, "\(model.id)")
                #expect(!endpoint.upstreamModel.isEmpty)
            }
        }
    }

    @Test func simulatorModePointsEveryProviderAtItsOwnPrefix() {
        var copy = catalog
        copy.pointAllProviders(at: "http://127.0.0.1:9/")
        #expect(copy.provider("openai")?.baseURL == "http://127.0.0.1:9/openai/v1")
        #expect(copy.provider("google-ai-studio")?.baseURL == "http://127.0.0.1:9/google-ai-studio/v1beta")
    }

    @Test func configMergeReplacesAndExtends() {
        var copy = catalog
        let extra = CatalogModel(
            id: "acme/custom", name: "Custom", author: "acme", contextLength: 1000,
            endpoints: [
                ModelEndpoint(
                    provider: "openai", upstreamModel: "custom", pricing: EndpointPricing(prompt: .zero, completion: .zero),
                    contextLength: 1000, maxOutputTokens: 100)
            ])
        copy.merge(providers: [], models: [extra])
        #expect(copy.model(id: "acme/custom")?.endpoints.first?.upstreamModel == "custom")
        #expect(copy.models.count == catalog.models.count + 1)
    }
}

@Suite struct CompletionAccumulatorTests {
    @Test func assemblesStreamedToolCallFragmentsByIndex() {
        var accumulator = CompletionAccumulator()
        accumulator.add(
            CompletionDelta(choices: [
                json(
                    #"{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}"#
                )
            ]))
        accumulator.add(
            CompletionDelta(choices: [json(#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}"#)]))
        accumulator.add(
            CompletionDelta(choices: [json(#"{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}"#)]
            ))
        accumulator.add(
            CompletionDelta(choices: [json(#"{"index":0,"delta":{},"finish_reason":"tool_calls","native_finish_reason":"tool_calls"}"#)]))
        let choice = accumulator.completedChoices()[0]
        #expect(choice["finish_reason"] == "tool_calls")
        #expect(choice["message"]?["content"] == .null)
        let call = choice["message"]?["tool_calls"]?.arrayValue?.first
        #expect(call?["id"] == "call_1")
        #expect(call?["function"]?["name"] == "get_weather")
        #expect(call?["function"]?["arguments"] == #"{"city":"Paris"}"#)
    }

    @Test func joinsContentAcrossChunks() {
        var accumulator = CompletionAccumulator()
        for piece in ["Hel", "lo", "!"] {
            accumulator.add(CompletionDelta(choices: [["index": 0, "delta": ["content": .string(piece)]]], upstreamID: "chatcmpl-1"))
        }
        #expect(accumulator.completedChoices()[0]["message"]?["content"] == "Hello!")
        #expect(accumulator.upstreamID == "chatcmpl-1")
    }

    @Test func normalizesProviderFinishReasons() {
        #expect(FinishReason.normalize("end_turn") == "stop")
        #expect(FinishReason.normalize("MAX_TOKENS") == "length")
        #expect(FinishReason.normalize("tool_use") == "tool_calls")
        #expect(FinishReason.normalize("SAFETY") == "content_filter")
        #expect(FinishReason.normalize(nil) == nil)
    }
}

@Suite struct JSONWriterTests {
    @Test func escapesStringsAndKeepsKeyOrder() {
        let value: JSONValue = ["b": "line\n\"quoted\"\u{01}", "a": [1, 2.5, true, nil], "cost": .decimal("0.000014")]
        #expect(JSONWriter.string(value) == #"{"b":"line\n\"quoted\"\u0001","a":[1,2.5,true,null],"cost":0.000014}"#)
    }

    @Test(arguments: ["", "plain", "\"", "\\", "a\"b\\c\nd\re\tf\u{1f}g", "😀 漢字 \u{0} end", String(repeating: "x\"", count: 500)])
    func everyStringRoundTrips(_ text: String) throws {
        #expect(try JSONParser.parse(JSONWriter.string(.string(text))) == .string(text))
    }
}
