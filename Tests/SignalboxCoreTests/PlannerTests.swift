import Testing
@testable import SignalboxCore

/// A small catalog with known prices and policies, so each planner rule can be seen on its own.
enum Fixture {
    static let policyOpen = DataPolicy(training: false, retentionDays: 30, zdr: false)
    static let policyZDR = DataPolicy(training: false, retentionDays: 0, zdr: true)
    static let policyTrains = DataPolicy(training: true, retentionDays: 30, zdr: false)

    static func provider(_ slug: String, _ policy: DataPolicy) -> ProviderInfo {
        ProviderInfo(
            slug: slug, name: slug.capitalized, format: .openai, baseURL: "http://sim/\(slug)/v1",
            apiKeyEnv: "X", region: "us", dataPolicy: policy)
    }

    static func endpoint(
        _ provider: String, tag: String? = nil, prompt: String, completion: String,
        maxOutput: Int = 4096, quantization: String = "fp8", parameters: [String] = ["tools", "temperature"]
    ) -> ModelEndpoint {
        ModelEndpoint(
            provider: provider, tag: tag, upstreamModel: "m",
            pricing: EndpointPricing(
                prompt: TokenPrice(prompt)!, completion: TokenPrice(completion)!), contextLength: 8192,
            maxOutputTokens: maxOutput, quantization: quantization, supportedParameters: parameters)
    }

    static let catalog = Catalog(
        providers: [provider("alpha", policyOpen), provider("beta", policyZDR), provider("gamma", policyTrains)],
        models: [
            CatalogModel(
                id: "acme/big", name: "Big", author: "acme", contextLength: 8192,
                endpoints: [
                    endpoint("alpha", prompt: "0.000003", completion: "0.000006"),
                    endpoint("beta", prompt: "0.000001", completion: "0.000002", maxOutput: 1024, quantization: "bf16"),
                    endpoint("beta", tag: "beta/turbo", prompt: "0.0000005", completion: "0.000001", parameters: ["temperature"]),
                    endpoint("gamma", prompt: "0.0000002", completion: "0.0000004", quantization: "int4"),
                ]),
            CatalogModel(
                id: "acme/small", name: "Small", author: "acme", contextLength: 8192,
                endpoints: [
                    endpoint("gamma", prompt: "0.0000001", completion: "0.0000001")
                ]),
        ])

    static func request(_ extra: String = "", model: String = "acme/big") -> ChatRequest {
        try! ChatRequest(json: json(#"{"model": "\#(model)", "messages": [{"role": "user", "content": "hi"}]\#(extra)}"#))
    }

    /// Tags in planned order, with the catalog order as the default (filters are what these test).
    static func tags(
        _ extra: String = "", model: String = "acme/big", health: HealthView = HealthView(), now: Double = 0,
        loadBalancing: RoutingPlanner.LoadBalancing = .catalogOrder, seed: UInt64 = 1,
        scope: PlanningScope = PlanningScope()
    ) throws(PlanningError) -> [String] {
        var random = SplitMix64(seed: seed)
        return try RoutingPlanner(catalog: catalog, loadBalancing: loadBalancing)
            .plan(request(extra, model: model), health: health, now: now, scope: scope, using: &random).map(\.endpoint.tag)
    }
}

/// A small seeded generator, so random picks repeat exactly.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct PlannerTests {
    @Test func defaultsToCatalogOrder() throws {
        #expect(try Fixture.tags() == ["alpha", "beta", "beta/turbo", "gamma"])
    }

    @Test func anUnknownModelIsNamed() {
        #expect(throws: PlanningError.invalidModel("acme/nothing")) { try Fixture.tags(model: "acme/nothing") }
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
        // The same ceilings in the forms other JSON libraries write them.
        #expect(try Fixture.tags(#", "provider": {"max_price": {"prompt": 5e-1, "completion": 1E0}}"#) == ["beta/turbo", "gamma"])
        // A ceiling far above every price admits everything; one far below, nothing paid
        // (scaling either to atto-dollars overflows 128 bits: that must not trap).
        #expect(try Fixture.tags(#", "provider": {"max_price": {"prompt": "999999999999999999999999999999"}}"#).count == 4)
        #expect(throws: PlanningError.self) {
            try Fixture.tags(#", "provider": {"max_price": {"prompt": 1e-36, "completion": 1e-36}}"#)
        }
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
            #expect(
                error
                    == .noEndpoints(
                        models: ["acme/big"],
                        excludedBy: [
                            .init(filter: "zdr", tags: ["alpha", "gamma"]), .init(filter: "only", tags: ["beta", "beta/turbo"]),
                        ])
                    || error
                        == .noEndpoints(
                            models: ["acme/big"],
                            excludedBy: [
                                .init(filter: "only", tags: ["beta", "beta/turbo"]), .init(filter: "zdr", tags: ["alpha", "gamma"]),
                            ]),
                "\(error)")
        }
    }

    @Test func theScopeNarrowsThePlanAndSaysWhatLeftNothing() throws {
        // The region's table: only these, preferred first unless the request gave an order.
        let table = RegionRoutingTable(allowed: ["gamma", "beta"], preferred: ["gamma"])
        #expect(try Fixture.tags(scope: PlanningScope(routingTable: ("eu", table))) == ["gamma", "beta", "beta/turbo"])
        #expect(throws: PlanningError.notAllowedInRegion(model: "acme/big", region: "eu", allowed: ["nobody"])) {
            try Fixture.tags(scope: PlanningScope(routingTable: ("eu", RegionRoutingTable(allowed: ["nobody"]))))
        }
        // Credentials on this node.
        #expect(try Fixture.tags(scope: PlanningScope(credentialedProviders: ["beta"])) == ["beta", "beta/turbo"])
        #expect(throws: PlanningError.self) { try Fixture.tags(scope: PlanningScope(credentialedProviders: [])) }
        // A pinned region nothing is in.
        #expect(throws: PlanningError.outsidePinnedRegion(model: "acme/big", region: "mars")) {
            try Fixture.tags(scope: PlanningScope(pinnedRegion: "mars"))
        }
    }

    static func chat(_ body: JSONValue) throws -> ChatRequest { try ChatRequest(json: body) }

    /// One user message of `bytes` ASCII bytes: bytes + 1 + 8 (message) + 8 (request) tokens.
    static func chat(promptBytes bytes: Int, maxTokens: Int?, n: Int? = nil) throws -> ChatRequest {
        var body: JSONObject = [
            "model": "acme/big", "messages": [["role": "user", "content": .string(String(repeating: "x", count: bytes))]],
        ]
        if let maxTokens { body["max_tokens"] = .int(Int64(maxTokens)) }
        if let n { body["n"] = .int(Int64(n)) }
        return try ChatRequest(json: .object(body))
    }

    var attempt: PlannedAttempt {
        PlannedAttempt(
            model: Fixture.catalog.models[0], endpoint: Fixture.catalog.models[0].endpoints[0],
            provider: Fixture.catalog.provider("alpha")!)
    }

    @Test func reservationCoversThePromptBoundAndEveryPossibleCompletionToken() throws {
        let request = try Self.chat(promptBytes: 83, maxTokens: nil)
        #expect(attempt.promptTokenBound(for: request) == 100)
        // 100 × $3/M + 4096 × $6/M = 0.0003 + 0.024576
        #expect(attempt.worstCaseCost(for: request).decimalString == "0.024876")
        #expect(attempt.worstCaseCost(for: try Self.chat(promptBytes: 83, maxTokens: 10)).decimalString == "0.00036")
    }

    @Test func everyChoiceIsReserved() throws {
        // 100 × $3/M + 64 × 10 × $6/M
        #expect(attempt.worstCaseCost(for: try Self.chat(promptBytes: 83, maxTokens: 10, n: 64)).decimalString == "0.00414")
        #expect(throws: InvalidRequest.self) { try Self.chat(promptBytes: 1, maxTokens: 10, n: ChatRequest.maximumChoices + 1) }
        #expect(throws: InvalidRequest.self) { try Self.chat(promptBytes: 1, maxTokens: 10, n: 0) }
    }

    @Test func promptBoundIsOneTokenPerByteWhateverTheScript() throws {
        // Emoji and CJK are 4 and 3 bytes each: a tokenizer falling back to bytes emits one token per byte.
        let emoji = try Self.chat(["model": "acme/big", "messages": [["role": "user", "content": "😀😀😀"]]])
        #expect(emoji.prompt.textTokens == 12 + 1 + 8 + 8)
        let cjk = try Self.chat(["model": "acme/big", "messages": [["role": "user", "content": "漢字"]]])
        #expect(cjk.prompt.textTokens == 6 + 1 + 8 + 8)
    }

    @Test func imagesCountTheEndpointsAllowanceAndFilesTheirBytesPlusAPage() throws {
        let request = try Self.chat([
            "model": "acme/big",
            "messages": [
                [
                    "role": "user",
                    "content": [
                        ["type": "text", "text": "look"],
                        ["type": "image_url", "image_url": ["url": "https://example.com/a.png"]],
                        ["type": "image_url", "image_url": ["url": "https://example.com/b.png"]],
                        ["type": "file", "file": ["filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"]],
                    ],
                ]
            ],
        ])
        #expect(request.prompt.images == 2)
        #expect(request.prompt.files == 1)
        var endpoint = attempt
        #expect(
            endpoint.promptTokenBound(for: request)
                == request.prompt.textTokens + 2 * ModelEndpoint.defaultImageTokens + PromptBound.perFile)
        endpoint.endpoint.imageTokens = 48_169
        #expect(endpoint.promptTokenBound(for: request) == request.prompt.textTokens + 2 * 48_169 + PromptBound.perFile)
    }

    @Test func aPartCountsByItsTypeWhateverElseItCarries() throws {
        // An image part with a stray empty `text` is still an image to the providers, so it is one here.
        let sneaky = try Self.chat([
            "model": "acme/big",
            "messages": [
                [
                    "role": "user",
                    "content": .array(
                        Array(
                            repeating: [
                                "type": "image_url", "text": "", "image_url": ["url": "https://example.com/a.png"],
                            ], count: 300)),
                ]
            ],
        ])
        #expect(sneaky.prompt.images == 300)
        // Tool definitions bound at their serialized bytes: digits and punctuation count.
        let tools = try Self.chat([
            "model": "acme/big", "messages": [["role": "user", "content": "x"]],
            "tools": [["type": "function", "function": ["name": "f", "parameters": ["maximum": 123456789012]]]],
        ])
        #expect(tools.prompt.textTokens >= JSONWriter.bytes(tools.field(.tools)!).count)
    }

    @Test func promptTokensArePricedAtTheCacheWritePriceWhenItIsDearer() throws {
        var cached = attempt
        cached.endpoint.pricing.inputCacheWrite = TokenPrice("0.00000375")!  // 1.25 × $3/M
        // 100 × $3.75/M + 10 × $6/M
        #expect(cached.worstCaseCost(for: try Self.chat(promptBytes: 83, maxTokens: 10)).decimalString == "0.000435")
    }
}

@Suite struct DefaultOrderingTests {
    /// 1/price² weights over the four endpoints of acme/big (prompt + completion per token):
    /// alpha $9/M, beta $3/M, beta/turbo $1.5/M, gamma $0.6/M.
    @Test func firstPickIsRandomWeightedByInversePriceSquared() throws {
        var counts: [String: Int] = [:]
        for seed in 0..<4000 {
            let first = try Fixture.tags(loadBalancing: .priceWeighted, seed: UInt64(seed)).first!
            counts[first, default: 0] += 1
        }
        // expected shares: gamma 0.8322, beta/turbo 0.1331, beta 0.0333, alpha 0.0037
        #expect(abs(Double(counts["gamma"] ?? 0) / 4000 - 0.832) < 0.03)
        #expect(abs(Double(counts["beta/turbo"] ?? 0) / 4000 - 0.133) < 0.03)
        #expect((counts["alpha"] ?? 0) < 60)
    }

    @Test func theRestFollowByPrice() throws {
        let tags = try Fixture.tags(loadBalancing: .priceWeighted, seed: 3)
        #expect(Set(tags) == ["alpha", "beta", "beta/turbo", "gamma"])
        let rest = tags.dropFirst().map { $0 }
        #expect(rest == ["gamma", "beta/turbo", "beta", "alpha"].filter { $0 != tags[0] })
    }

    @Test func endpointsWithARecentOutageGoLastButStay() throws {
        var health = HealthView()
        health.update(model: "acme/big", tag: "gamma") { $0.recordFailure(at: 100, rateLimited: false) }
        for seed in 0..<50 {
            let tags = try Fixture.tags(health: health, now: 110, loadBalancing: .priceWeighted, seed: UInt64(seed))
            #expect(tags.last == "gamma" && tags.count == 4)
        }
        // 30 s later the outage is no longer recent
        #expect(try Fixture.tags(health: health, now: 131).first == "alpha")
        #expect(try Fixture.tags(health: health, now: 131, loadBalancing: .catalogOrder).last == "gamma")
    }

    @Test func anExplicitOrderIsHonouredEvenForADegradedEndpoint() throws {
        var health = HealthView()
        for _ in 0..<5 { health.update(model: "acme/big", tag: "beta") { $0.recordFailure(at: 100, rateLimited: false) } }
        #expect(try Fixture.tags(#", "provider": {"order": ["beta"]}"#, health: health, now: 101).first == "beta")
        // moved last, never dropped: a request that allows only the degraded endpoint still reaches it
        #expect(try Fixture.tags(#", "provider": {"only": ["beta"]}"#, health: health, now: 101) == ["beta/turbo", "beta"])
        #expect(try Fixture.tags(#", "provider": {"ignore": ["alpha", "gamma", "beta/turbo"]}"#, health: health, now: 101) == ["beta"])
    }

    @Test func variantsSortByPriceOrThroughput() throws {
        #expect(try Fixture.tags(model: "acme/big:floor") == ["gamma", "beta/turbo", "beta", "alpha"])
        var health = HealthView()
        health.update(model: "acme/big", tag: "alpha") { $0.recordSuccess(at: 10, firstTokenMillis: 900, tokensPerSecond: 150) }
        health.update(model: "acme/big", tag: "beta") { $0.recordSuccess(at: 10, firstTokenMillis: 100, tokensPerSecond: 40) }
        #expect(try Fixture.tags(model: "acme/big:nitro", health: health, now: 20).prefix(2) == ["alpha", "beta"])
        #expect(try Fixture.tags(#", "provider": {"sort": "latency"}"#, health: health, now: 20).prefix(2) == ["beta", "alpha"])
    }

    @Test func softPreferencesPutEndpointsThatMeetThemFirst() throws {
        var health = HealthView()
        health.update(model: "acme/big", tag: "alpha") { $0.recordSuccess(at: 10, firstTokenMillis: 2000, tokensPerSecond: 10) }
        health.update(model: "acme/big", tag: "beta") { $0.recordSuccess(at: 10, firstTokenMillis: 200, tokensPerSecond: 90) }
        let slow = try Fixture.tags(#", "provider": {"preferred_min_throughput": 50}"#, health: health, now: 20)
        #expect(slow.last == "alpha" && slow.count == 4)
        let laggy = try Fixture.tags(#", "provider": {"preferred_max_latency": {"p50": 1}}"#, health: health, now: 20)
        #expect(laggy.last == "alpha")
    }

    @Test func partitionNoneSortsAcrossModels() throws {
        let perModel = try Fixture.tags(#", "models": ["acme/small"], "provider": {"sort": "price"}"#)
        #expect(perModel.last == "gamma" && perModel.count == 5)  // acme/small's gamma comes after all of acme/big
        let together = try Fixture.tags(#", "models": ["acme/small"], "provider": {"sort": {"by": "price", "partition": "none"}}"#)
        #expect(together.first == "gamma" && together.count == 5)  // acme/small's $0.2/M endpoint leads
    }

    @Test func toolRequestsUseOnlyToolCapableEndpointsWhenSomeExist() throws {
        #expect(try Fixture.tags(#", "tools": [{"type": "function", "function": {"name": "f"}}]"#) == ["alpha", "beta", "gamma"])
    }

    @Test func withoutFallbacksOnlyTheFirstChoiceIsTried() throws {
        #expect(try Fixture.tags(#", "provider": {"allow_fallbacks": false}"#).count == 1)
    }
}

@Suite struct CircuitBreakerTests {
    @Test func opensAfterRepeatedFailuresProbesAfterCooldownAndClosesOnSuccess() {
        var breaker = CircuitBreaker(failureThreshold: 3, cooldown: 10)
        breaker.recordFailure(at: 0)
        breaker.recordFailure(at: 1)
        #expect(breaker.state(at: 1) == .closed)
        breaker.recordFailure(at: 2)
        #expect(breaker.state(at: 2) == .open)
        #expect(breaker.state(at: 11.9) == .open)
        #expect(breaker.state(at: 12) == .halfOpen)
        breaker.recordFailure(at: 12)  // the probe failed
        #expect(breaker.state(at: 13) == .open)
        #expect(breaker.state(at: 22) == .halfOpen)
        breaker.recordSuccess()
        #expect(breaker.state(at: 22) == .closed && breaker.consecutiveFailures == 0)
    }

    @Test func uptimeExcludesRateLimitsAndForgetsOldBuckets() {
        var health = EndpointHealth()
        health.recordSuccess(at: 0, firstTokenMillis: 100, tokensPerSecond: 50)
        health.recordSuccess(at: 1, firstTokenMillis: 300, tokensPerSecond: 70)
        health.recordFailure(at: 2, rateLimited: true)
        health.recordFailure(at: 3, rateLimited: false)
        #expect(health.uptime(lastSeconds: 300, now: 10) == 200.0 / 3)
        #expect(health.meanFirstTokenMillis(lastSeconds: 300, now: 10) == 200)
        #expect(health.meanThroughput(lastSeconds: 300, now: 10) == 60)
        #expect(health.uptime(lastSeconds: 300, now: 4000) == nil)
    }
}
