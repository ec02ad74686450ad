/// One upstream call the router may make, in the order it would make them.
public struct PlannedAttempt: Sendable, Hashable {
    public var model: CatalogModel
    public var endpoint: ModelEndpoint
    public var provider: ProviderInfo

    public init(model: CatalogModel, endpoint: ModelEndpoint, provider: ProviderInfo) {
        self.model = model
        self.endpoint = endpoint
        self.provider = provider
    }

    /// The worst-case cost of this attempt: the estimated prompt plus every completion token
    /// it may produce, rounded up. Holds are sized with it.
    public func worstCaseCost(promptTokens: Int, maxTokens: Int?) -> Money {
        let completion = min(maxTokens ?? endpoint.maxOutputTokens, endpoint.maxOutputTokens)
        let pricing = endpoint.pricing
        return Money(ceilingAttos: pricing.prompt.attos(for: promptTokens)
            + pricing.completion.attos(for: max(completion, maxTokens ?? 0))
            + pricing.request.attos)
    }
}

/// Decides which endpoints to try for a request, and in which order.
///
/// Pure: no I/O, no clock, no randomness of its own, so every rule is unit-tested directly.
public struct RoutingPlanner: Sendable {
    public var catalog: Catalog

    public init(catalog: Catalog) { self.catalog = catalog }

    /// The attempts for `request`, or an `APIError`: 400 for an unknown model, 404 (saying
    /// which filter excluded which endpoints) when filters leave nothing.
    public func plan(_ request: ChatRequest) throws(APIError) -> [PlannedAttempt] {
        var attempts: [PlannedAttempt] = []
        var exclusions: [(filter: String, tag: String, model: String)] = []
        for (position, id) in request.models.enumerated() {
            guard let model = catalog.model(id: id) else {
                if position == 0 || request.models.count == 1 {
                    throw .badRequest("\(id) is not a valid model ID", metadata: ["model": .string(id)])
                }
                continue
            }
            var candidates: [PlannedAttempt] = []
            for endpoint in model.endpoints {
                guard let provider = catalog.provider(endpoint.provider) else { continue }
                if let reason = exclusion(of: endpoint, in: model, for: request) {
                    exclusions.append((reason, endpoint.tag, model.id))
                } else {
                    candidates.append(PlannedAttempt(model: model, endpoint: endpoint, provider: provider))
                }
            }
            attempts += order(candidates, for: request.provider)
        }
        guard !attempts.isEmpty else { throw noEndpoints(request, exclusions) }
        return attempts
    }

    /// Why an endpoint may not serve the request, as the name of the preference that excludes it.
    func exclusion(of endpoint: ModelEndpoint, in model: CatalogModel, for request: ChatRequest) -> String? {
        let preferences = request.provider
        if let only = preferences.only, !only.contains(where: { RoutingPlanner.slug($0, matches: endpoint.tag) }) {
            return "only"
        }
        if let ignore = preferences.ignore, ignore.contains(where: { RoutingPlanner.slug($0, matches: endpoint.tag) }) {
            return "ignore"
        }
        if !preferences.allowFallbacks, let order = preferences.order,
            !order.contains(where: { RoutingPlanner.slug($0, matches: endpoint.tag) })
        {
            return "order"
        }
        let policy = catalog.dataPolicy(of: endpoint)
        if preferences.denyDataCollection && (policy.training || policy.retentionDays > 0) { return "data_collection" }
        if preferences.zdr && !policy.zdr { return "zdr" }
        if let quantizations = preferences.quantizations, !quantizations.contains(endpoint.quantization.lowercased()) {
            return "quantizations"
        }
        if let ceiling = preferences.maxPromptPerMillion, exceeds(endpoint.pricing.prompt, ceiling) { return "max_price" }
        if let ceiling = preferences.maxCompletionPerMillion, exceeds(endpoint.pricing.completion, ceiling) {
            return "max_price"
        }
        if let maxTokens = request.maxTokens, maxTokens > endpoint.maxOutputTokens { return "max_tokens" }
        if preferences.requireParameters,
            request.usedParameters.contains(where: { !endpoint.supportedParameters.contains($0) })
        {
            return "require_parameters"
        }
        return nil
    }

    /// Orders a model's eligible endpoints: `provider.order` first (in its order), then by
    /// `sort`, otherwise catalog order.
    func order(_ candidates: [PlannedAttempt], for preferences: ProviderPreferences) -> [PlannedAttempt] {
        var rest = candidates
        if preferences.sort == .price {
            rest = rest.enumerated().sorted { a, b in
                let pa = a.element.endpoint.pricing, pb = b.element.endpoint.pricing
                let ca = pa.prompt.attos + pa.completion.attos, cb = pb.prompt.attos + pb.completion.attos
                return ca != cb ? ca < cb : a.offset < b.offset
            }.map(\.element)
        }
        guard let order = preferences.order else { return rest }
        var first: [PlannedAttempt] = []
        for slug in order {
            while let index = rest.firstIndex(where: { RoutingPlanner.slug(slug, matches: $0.endpoint.tag) }) {
                first.append(rest.remove(at: index))
            }
        }
        return first + rest
    }

    /// `max_price` is USD per million tokens; prices are USD per token.
    func exceeds(_ price: TokenPrice, _ ceilingPerMillion: ExactDecimal) -> Bool {
        var ceilingAttos = ceilingPerMillion.significand
        // USD/M → atto-USD per token: × 1e18 / 1e6 = × 1e12, then undo the decimal's fraction digits.
        var exponent = 12 - ceilingPerMillion.fractionDigits
        while exponent > 0 { ceilingAttos *= 10; exponent -= 1 }
        var price = price.attos
        while exponent < 0 { price *= 10; exponent += 1 }
        return price > ceilingAttos
    }

    /// A base slug (`deepinfra`) matches every endpoint of that provider (`deepinfra/turbo`);
    /// a full slug matches only itself.
    public static func slug(_ slug: String, matches tag: String) -> Bool {
        let tag = tag.lowercased()
        return tag == slug || (tag.hasPrefix(slug) && tag.dropFirst(slug.count).first == "/")
    }

    func noEndpoints(_ request: ChatRequest, _ exclusions: [(filter: String, tag: String, model: String)]) -> APIError {
        var byFilter: [String: [String]] = [:]
        var filters: [String] = []
        for exclusion in exclusions {
            if byFilter[exclusion.filter] == nil { filters.append(exclusion.filter) }
            byFilter[exclusion.filter, default: []].append(exclusion.tag)
        }
        let detail = filters.map { "\($0) excluded \(byFilter[$0]!.joined(separator: ", "))" }.joined(separator: "; ")
        let models = request.models.joined(separator: ", ")
        let message = detail.isEmpty
            ? "No endpoints found for \(models)."
            : "No endpoints found for \(models) that match your request: \(detail)."
        var metadata = JSONObject()
        metadata["requested_models"] = .array(request.models.map { .string($0) })
        metadata["excluded_by"] = .object(JSONObject(filters.map { ($0, .array(byFilter[$0]!.map { .string($0) })) }))
        return .notFound(message, metadata: metadata)
    }
}
