import Testing
@testable import SignalboxCore

/// A small catalog with known prices and policies, so each planner rule can be seen on its own.
enum Fixture {
    static let policyOpen = DataPolicy(training: false, retentionDays: 30, zdr: false)
    static let policyZDR = DataPolicy(training: false, retentionDays: 0, zdr: true)
    static let policyTrains = DataPolicy(training: true, retentionDays: 30, zdr: false)

    static func provider(_ slug: String, _ policy: DataPolicy) -> ProviderInfo {
        ProviderInfo(slug: slug, name: slug.capitalized, format: .openai, baseURL: "http://sim/\(slug)/v1",
                     apiKeyEnv: "X", region: "us", dataPolicy: policy)
    }

    static func endpoint(_ provider: String, tag: String? = nil, prompt: String, completion: String,
                         maxOutput: Int = 4096, quantization: String = "fp8", parameters: [String] = ["tools", "temperature"]) -> ModelEndpoint {
        ModelEndpoint(provider: provider, tag: tag, upstreamModel: "m", pricing: EndpointPricing(
            prompt: TokenPrice(prompt)!, completion: TokenPrice(completion)!), contextLength: 8192,
            maxOutputTokens: maxOutput, quantization: quantization, supportedParameters: parameters)
    }

    static let catalog = Catalog(
        providers: [provider("alpha", policyOpen), provider("beta", policyZDR), provider("gamma", policyTrains)],
        models: [
            CatalogModel(id: "acme/big", name: "Big", author: "acme", contextLength: 8192, endpoints: [
                endpoint("alpha", prompt: "0.000003", completion: "0.000006"),
                endpoint("beta", prompt: "0.000001", completion: "0.000002", maxOutput: 1024, quantization: "bf16"),
                endpoint("beta", tag: "beta/turbo", prompt: "0.0000005", completion: "0.000001", parameters: ["temperature"]),
                endpoint("gamma", prompt: "0.0000002", completion: "0.0000004", quantization: "int4"),
            ]),
            CatalogModel(id: "acme/small", name: "Small", author: "acme", contextLength: 8192, endpoints: [
                endpoint("gamma", prompt: "0.0000001", completion: "0.0000001"),
            ]),
        ])

    static func request(_ extra: String = "", model: String = "acme/big") -> ChatRequest {
        try! ChatRequest(json: json(#"{"model": "\#(model)", "messages": [{"role": "user", "content": "hi"}]\#(extra)}"#))
    }

    static func tags(_ extra: String = "", model: String = "acme/big") throws(APIError) -> [String] {
        try RoutingPlanner(catalog: catalog).plan(request(extra, model: model)).map(\.endpoint.tag)
    }
}

@Suite struct PlannerTests {
    @Test func defaultsToCatalogOrder() throws {
        #expect(try Fixture.tags() == ["alpha", "beta", "beta/turbo", "gamma"])
    }

    @Test func unknownModelIsABadRequest() {
        #expect(throws: APIError.self) { try Fixture.tags(model: "acme/nothing") }
        do { _ = try Fixture.tags(model: "acme/nothing") } catch { #expect(error.statusCode == 400) }
    }

    @Test func orderPutsNamedProvidersFirstAndKeepsTheRestAsFallbacks() throws {
        #expect(try Fixture.tags(#", "provider": {"order": ["gamma", "beta"]}"#) == ["gamma", "beta", "beta/turbo", "alpha"])
    }

    @Test func orderWithoutFallbacksAllowsOnlyTheNamedProviders() throws {
        #expect(try Fixture.tags(#", "provider": {"order": ["beta/turbo"], "allow_fallbacks": false}"#) == ["beta/turbo"])
    }

    @Test func aBaseSlugMatchesEveryVariantAndAFullSlugOnlyItself() throws {
        #expect(try Fixture.tags(#", "provider": {"only": ["beta"]}"#) == ["beta", "beta/turbo"])
        #expect(try Fixture.tags(#", "provider": {"ignore": ["beta/turbo"]}"#) == ["alpha", "beta", "gamma"])
        #expect(!RoutingPlanner.slug("bet", matches: "beta"))
    }

    @Test func dataPolicyFiltersTrainingAndRetention() throws {
        #expect(try Fixture.tags(#", "provider": {"data_collection": "deny"}"#) == ["beta", "beta/turbo"])
        #expect(try Fixture.tags(#", "provider": {"zdr": true}"#) == ["beta", "beta/turbo"])
    }

    @Test func sortByPriceIsCheapestFirst() throws {
        #expect(try Fixture.tags(#", "provider": {"sort": "price"}"#) == ["gamma", "beta/turbo", "beta", "alpha"])
    }

    @Test func maxPriceIsPerMillionTokens() throws {
        // $0.5/M prompt and $1/M completion admit beta/turbo ($0.5, $1) and gamma ($0.2, $0.4).
        #expect(try Fixture.tags(#", "provider": {"max_price": {"prompt": 0.5, "completion": 1}}"#) == ["beta/turbo", "gamma"])
    }

    @Test func maxTokensBeyondAnEndpointsOutputCapSkipsIt() throws {
        #expect(try Fixture.tags(#", "max_tokens": 2000"#) == ["alpha", "beta/turbo", "gamma"])
    }

    @Test func requireParametersDropsEndpointsLackingAUsedParameter() throws {
        let tags = try Fixture.tags(#", "tools": [], "provider": {"require_parameters": true}"#)
        #expect(tags == ["alpha", "beta", "gamma"])
    }

    @Test func quantizationsFilter() throws {
        #expect(try Fixture.tags(#", "provider": {"quantizations": ["int4", "bf16"]}"#) == ["beta", "gamma"])
    }

    @Test func fallbackModelsFollowThePrimaryModelsEndpoints() throws {
        #expect(try Fixture.tags(#", "models": ["acme/small"], "provider": {"only": ["gamma"]}"#) == ["gamma", "gamma"])
    }

    @Test func emptyResultSaysWhichFilterExcludedWhich() {
        do {
            _ = try Fixture.tags(#", "provider": {"zdr": true, "only": ["alpha", "gamma"]}"#)
            Issue.record("planned despite filters")
        } catch {
            #expect(error.statusCode == 404)
            #expect(error.message.hasPrefix("No endpoints found for acme/big"))
            #expect(error.message.contains("only excluded beta, beta/turbo"))
            #expect(error.message.contains("zdr excluded alpha, gamma"))
        }
    }

    @Test func holdCoversThePromptEstimateAndEveryPossibleCompletionToken() {
        let attempt = PlannedAttempt(model: Fixture.catalog.models[0], endpoint: Fixture.catalog.models[0].endpoints[0],
                                     provider: Fixture.catalog.provider("alpha")!)
        // 100 × $3/M + 4096 × $6/M = 0.0003 + 0.024576
        #expect(attempt.worstCaseCost(promptTokens: 100, maxTokens: nil).decimalString == "0.024876")
        #expect(attempt.worstCaseCost(promptTokens: 100, maxTokens: 10).decimalString == "0.00036")
    }
}
