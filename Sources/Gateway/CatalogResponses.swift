import SignalboxCore

/// The OpenRouter-shaped JSON for `/models`, `/models/{author}/{slug}/endpoints` and `/providers`.
///
/// Built once from the catalog: the catalog does not change while a node runs.
struct CatalogResponses: Sendable {
    let models: JSONValue
    let providers: JSONValue
    private let modelsByID: [String: CatalogModel]
    private let catalog: Catalog

    init(catalog: Catalog) {
        self.catalog = catalog
        modelsByID = Dictionary(catalog.models.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let list = catalog.models.map { CatalogResponses.model($0, catalog: catalog) }
        models = ["data": .array(list), "total_count": .int(Int64(list.count)), "links": ["next": nil]]
        let used = Set(catalog.models.flatMap { $0.endpoints.map(\.provider) })
        providers = [
            "data": .array(
                catalog.providers.values.filter { used.contains($0.slug) }.sorted { $0.slug < $1.slug }.map { provider in
                    [
                        "name": .string(provider.name), "slug": .string(provider.slug),
                        "privacy_policy_url": provider.privacyPolicyURL.map { .string($0) } ?? nil,
                        "terms_of_service_url": provider.termsOfServiceURL.map { .string($0) } ?? nil,
                        "status_page_url": provider.statusPageURL.map { .string($0) } ?? nil,
                        "headquarters": provider.headquarters.map { .string($0) } ?? nil,
                        "datacenters": .array([.string(provider.region.uppercased())]),
                    ]
                })
        ]
    }

    static func strings(_ values: [String]) -> JSONValue { .array(values.map { .string($0) }) }

    static func architecture(_ model: CatalogModel) -> JSONValue {
        [
            "modality": .string(model.inputModalities.joined(separator: "+") + "->" + model.outputModalities.joined(separator: "+")),
            "input_modalities": strings(model.inputModalities), "output_modalities": strings(model.outputModalities),
            "tokenizer": .string(model.tokenizer), "instruct_type": nil,
        ]
    }

    static func pricing(_ pricing: EndpointPricing) -> JSONValue {
        [
            "prompt": .string(pricing.prompt.text), "completion": .string(pricing.completion.text),
            "request": .string(pricing.request.text), "image": "0", "web_search": "0", "internal_reasoning": "0",
            "input_cache_read": .string(pricing.inputCacheRead.text),
            "input_cache_write": .string(pricing.inputCacheWrite.text),
        ]
    }

    static func model(_ model: CatalogModel, catalog: Catalog) -> JSONValue {
        let top = model.endpoints[0]
        let slug = model.id.split(separator: ":").first.map(String.init) ?? model.id
        return [
            "id": .string(model.id), "canonical_slug": .string(slug), "hugging_face_id": nil,
            "name": .string(model.name), "created": .int(Int64(model.created)), "description": .string(model.description),
            "context_length": .int(Int64(model.contextLength)), "architecture": architecture(model),
            "pricing": pricing(top.pricing),
            "top_provider": [
                "context_length": .int(Int64(top.contextLength)), "max_completion_tokens": .int(Int64(top.maxOutputTokens)),
                "is_moderated": false,
            ],
            "per_request_limits": nil, "supported_parameters": strings(model.supportedParameters),
            "default_parameters": ["temperature": nil, "top_p": nil, "frequency_penalty": nil],
            "supported_voices": nil, "expiration_date": nil, "knowledge_cutoff": nil,
            "links": ["details": .string("/api/v1/models/\(model.id)/endpoints")],
        ]
    }

    /// `/models/{author}/{slug}/endpoints`, or nil for an unknown model.
    func endpoints(modelID: String, health tracker: HealthTracker) -> JSONValue? {
        guard let model = modelsByID[modelID] else { return nil }
        let view = tracker.snapshot()
        let now = tracker.now
        let endpoints: [JSONValue] = model.endpoints.map { endpoint in
            let provider = catalog.provider(endpoint.provider)
            let providerName = provider?.name ?? endpoint.provider
            let tools = endpoint.supportedParameters.contains("tools")
            let health = view.health(model: model.id, tag: endpoint.tag)
            func uptime(_ seconds: Double) -> JSONValue {
                health?.uptime(lastSeconds: seconds, now: now).map { .double(($0 * 100).rounded() / 100) } ?? nil
            }
            return [
                "name": .string("\(providerName) | \(model.id)"), "model_id": .string(model.id),
                "model_name": .string(model.name), "provider_name": .string(providerName), "tag": .string(endpoint.tag),
                "context_length": .int(Int64(endpoint.contextLength)),
                "max_completion_tokens": .int(Int64(endpoint.maxOutputTokens)),
                "max_prompt_tokens": .int(Int64(endpoint.contextLength)),
                "pricing": CatalogResponses.pricing(endpoint.pricing),
                "quantization": .string(endpoint.quantization),
                "supported_parameters": CatalogResponses.strings(endpoint.supportedParameters),
                "supports_implicit_caching": .bool(!endpoint.pricing.inputCacheRead.isZero),
                "supports_tool_choice": ["auto": .bool(tools), "none": .bool(tools), "required": .bool(tools), "function": .bool(tools)],
                "supports_diarization": false, "native_tools": [:], "service_tier": nil,
                "status": (health?.isDegraded(at: now) ?? false) ? -1 : 0,
                "uptime_last_5m": uptime(300), "uptime_last_30m": uptime(1800), "uptime_last_1d": nil,  // 30 minutes are kept
                "latency_last_30m": nil, "throughput_last_30m": nil,
                "region": .string(catalog.region(of: endpoint)),
                "data_policy": [
                    "training": .bool(catalog.dataPolicy(of: endpoint).training),
                    "retention_days": .int(Int64(catalog.dataPolicy(of: endpoint).retentionDays)),
                    "zdr": .bool(catalog.dataPolicy(of: endpoint).zdr),
                ],
            ]
        }
        return [
            "data": [
                "id": .string(model.id), "name": .string(model.name), "created": .int(Int64(model.created)),
                "description": .string(model.description), "architecture": CatalogResponses.architecture(model),
                "endpoints": .array(endpoints),
            ]
        ]
    }
}
