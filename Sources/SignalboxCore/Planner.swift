/// One upstream call the router may make, in the order it would make them.
public struct PlannedAttempt: Sendable, Hashable {
    /// The catalog entries of the attempt, shared: planning copies attempts many times (filters,
    /// sorts, the failover queue), and a copy is then one reference instead of every string and
    /// array of a model, an endpoint and a provider.
    private final class Parts: Sendable {
        let model: CatalogModel
        let endpoint: ModelEndpoint
        let provider: ProviderInfo

        init(model: CatalogModel, endpoint: ModelEndpoint, provider: ProviderInfo) {
            self.model = model
            self.endpoint = endpoint
            self.provider = provider
        }
    }

    private var parts: Parts
    // Read in place (`_read`): a getter returned the whole entry, copying every string and array
    // in it for each `attempt.endpoint.tag` — ~135 retains per request.
    public var model: CatalogModel {
        _read { yield parts.model }
        set { parts = Parts(model: newValue, endpoint: parts.endpoint, provider: parts.provider) }
    }
    public var endpoint: ModelEndpoint {
        _read { yield parts.endpoint }
        set { parts = Parts(model: parts.model, endpoint: newValue, provider: parts.provider) }
    }
    public var provider: ProviderInfo {
        _read { yield parts.provider }
        set { parts = Parts(model: parts.model, endpoint: parts.endpoint, provider: newValue) }
    }

    public init(model: CatalogModel, endpoint: ModelEndpoint, provider: ProviderInfo) {
        parts = Parts(model: model, endpoint: endpoint, provider: provider)
    }

    public static func == (lhs: PlannedAttempt, rhs: PlannedAttempt) -> Bool {
        lhs.parts === rhs.parts || (lhs.model == rhs.model && lhs.endpoint == rhs.endpoint && lhs.provider == rhs.provider)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(model)
        hasher.combine(endpoint)
        hasher.combine(provider)
    }

    /// The most completion tokens this attempt may produce per choice: the client's
    /// `max_tokens`, else the endpoint's output limit. The adapters send it upstream, so the
    /// reservation covers what the provider is allowed to generate.
    public func completionLimit(for request: ChatRequest) -> Int {
        min(request.maxTokens ?? endpoint.maxOutputTokens, endpoint.maxOutputTokens)
    }

    /// An upper bound on the prompt tokens this endpoint will count for the request.
    public func promptTokenBound(for request: ChatRequest) -> Int {
        let prompt = request.prompt
        let bound = prompt.textTokens + prompt.images * endpoint.imageTokenAllowance + prompt.files * PromptBound.perFile
        // A file given by URL may be as long as the context allows: nothing else bounds it.
        return prompt.unboundedFiles > 0 ? max(bound, endpoint.contextLength) : bound
    }

    /// The worst-case cost of this attempt, rounded up: every prompt token at the dearer of the
    /// prompt and cache-write prices, plus `completionLimit` tokens for each of the request's
    /// choices. Reservations are sized with it, and a charge never exceeds the reservation.
    public func worstCaseCost(for request: ChatRequest) -> Money {
        let pricing = endpoint.pricing
        let promptPrice = max(pricing.prompt.attos, pricing.inputCacheWrite.attos)
        let completion = Int128(completionLimit(for: request)) * Int128(request.choices)
        return Money(
            ceilingAttos: promptPrice * Int128(promptTokenBound(for: request))
                + pricing.completion.attos * completion + pricing.request.attos)
    }
}

/// Decides which endpoints to try for a request, and in which order.
///
/// Pure: no I/O, no clock, no randomness of its own, so every rule is unit-tested directly.
public struct RoutingPlanner: Sendable {
    /// How the default order (no `order`, no `sort`) picks the first endpoint.
    public enum LoadBalancing: String, Sendable, Hashable, CaseIterable {
        /// OpenRouter's rule: a random first pick, weighted by 1/price².
        case priceWeighted = "price-weighted"
        /// The catalog's endpoint order: a fixed primary and its fallbacks.
        case catalogOrder = "catalog-order"
    }

    public var catalog: Catalog
    public var loadBalancing: LoadBalancing

    public init(catalog: Catalog, loadBalancing: LoadBalancing = .priceWeighted) {
        self.catalog = catalog
        self.loadBalancing = loadBalancing
    }

    /// The attempts for `request` within `scope`, or why there are none (`PlanningError`: an
    /// unknown model; filters, naming which excluded which endpoints; the region's routing table;
    /// the key's pinned region; no credentials on this node).
    ///
    /// `health` and `now` demote endpoints with a recent outage or an open circuit; `random`
    /// makes the price-weighted first pick (inject a seeded generator to test it).
    public func plan(
        _ request: ChatRequest, health: HealthView = HealthView(), now: Double = 0, scope: PlanningScope = PlanningScope(),
        using random: inout some RandomNumberGenerator
    ) throws(PlanningError) -> [PlannedAttempt] {
        var attempts = try planRequest(request, health: health, now: now, using: &random)
        if let (region, table) = scope.routingTable {
            attempts = table.apply(to: attempts, explicitOrder: !(request.provider.order ?? []).isEmpty)
            guard !attempts.isEmpty else {
                throw .notAllowedInRegion(model: request.requestedModel, region: region, allowed: table.allowed)
            }
        }
        // Data residency: a pinned key's requests use only its region's endpoints.
        if let region = scope.pinnedRegion {
            attempts = attempts.filter { catalog.region(of: $0.endpoint) == region }
            guard !attempts.isEmpty else { throw .outsidePinnedRegion(model: request.requestedModel, region: region) }
        }
        // An endpoint whose provider has no credentials on this node cannot be attempted.
        if let credentialed = scope.credentialedProviders {
            let usable = attempts.filter { credentialed.contains($0.provider.slug) }
            guard !usable.isEmpty else {
                let providers = Dictionary(attempts.map { ($0.provider.slug, $0.provider.name) }, uniquingKeysWith: { first, _ in first })
                throw .noCredentials(model: request.requestedModel, providers: providers)
            }
            attempts = usable
        }
        return attempts
    }

    func planRequest(
        _ request: ChatRequest, health: HealthView, now: Double, using random: inout some RandomNumberGenerator
    ) throws(PlanningError) -> [PlannedAttempt] {
        var preferences = request.provider
        var perModel: [[PlannedAttempt]] = []
        var exclusions: [(filter: String, tag: String, model: String)] = []
        for (position, requested) in request.models.enumerated() {
            // Dynamic variants: `:nitro` sorts by throughput, `:floor` by price.
            var id = requested
            if let base = Self.strip(":nitro", from: requested) {
                id = base
                preferences.sort = preferences.sort ?? .throughput
            }
            if let base = Self.strip(":floor", from: requested) {
                id = base
                preferences.sort = preferences.sort ?? .price
            }
            guard let model = catalog.model(id: id) else {
                if position == 0 || request.models.count == 1 {
                    throw .invalidModel(requested)
                }
                continue
            }
            // Chat never reaches an embeddings model, nor embeddings a chat model.
            guard model.isEmbeddings == (request.embeddings != nil) else {
                throw .wrongKind(model: model.id, embeddings: model.isEmbeddings)
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
            // Soft capability filter: if some endpoints support what the request uses, only they serve it.
            for parameter in ["tools", "response_format"] where request.usedParameters.contains(parameter) {
                let capable = candidates.filter {
                    $0.endpoint.supportedParameters.isEmpty || $0.endpoint.supportedParameters.contains(parameter)
                }
                if !capable.isEmpty && capable.count < candidates.count {
                    for dropped in candidates where !capable.contains(dropped) {
                        exclusions.append((parameter, dropped.endpoint.tag, model.id))
                    }
                    candidates = capable
                }
            }
            perModel.append(candidates)
        }
        let context = OrderingContext(health: health, now: now)
        var attempts: [PlannedAttempt]
        if preferences.sort != nil && preferences.sortAcrossModels {
            attempts = order(perModel.flatMap { $0 }, preferences, context, using: &random)
        } else {
            attempts = perModel.flatMap { order($0, preferences, context, using: &random) }
        }
        guard !attempts.isEmpty else { throw noEndpoints(request, exclusions) }
        if !preferences.allowFallbacks && preferences.order == nil { attempts = [attempts[0]] }
        return attempts
    }

    /// Plans with the system random generator.
    public func plan(
        _ request: ChatRequest, health: HealthView = HealthView(), now: Double = 0,
        scope: PlanningScope = PlanningScope()
    ) throws(PlanningError) -> [PlannedAttempt] {
        var random = SystemRandomNumberGenerator()
        return try plan(request, health: health, now: now, scope: scope, using: &random)
    }

    static func strip(_ suffix: String, from id: String) -> String? {
        id.hasSuffix(suffix) ? String(id.dropLast(suffix.count)) : nil
    }

    struct OrderingContext {
        var health: HealthView
        var now: Double

        func degraded(_ attempt: PlannedAttempt) -> Bool {
            health.health(model: attempt.model.id, tag: attempt.endpoint.tag)?.isDegraded(at: now) ?? false
        }

        func throughput(_ attempt: PlannedAttempt) -> Double? {
            health.health(model: attempt.model.id, tag: attempt.endpoint.tag)?.meanThroughput(lastSeconds: 300, now: now)
        }

        func latencySeconds(_ attempt: PlannedAttempt) -> Double? {
            health.health(model: attempt.model.id, tag: attempt.endpoint.tag)?
                .meanFirstTokenMillis(lastSeconds: 300, now: now).map { $0 / 1000 }
        }
    }

    /// The sum of an endpoint's prompt and completion prices, the "price" the ordering rules use.
    static func price(_ attempt: PlannedAttempt) -> Int128 {
        attempt.endpoint.pricing.prompt.attos + attempt.endpoint.pricing.completion.attos
    }

    /// Orders eligible endpoints.
    ///
    /// - `provider.order` first, exactly as given (health does not reorder an explicit choice);
    /// - with `sort`: cheapest, fastest or quickest-to-first-token first;
    /// - otherwise OpenRouter's default: the first pick is random, weighted by 1/price², among
    ///   endpoints without a recent outage; the rest follow by price.
    /// Endpoints with a recent outage or an open circuit go last in the default and sorted
    /// orders, but are never dropped. Soft throughput/latency preferences come before that.
    func order(
        _ candidates: [PlannedAttempt], _ preferences: ProviderPreferences, _ context: OrderingContext,
        using random: inout some RandomNumberGenerator
    ) -> [PlannedAttempt] {
        var rest = candidates
        var first: [PlannedAttempt] = []
        for slug in preferences.order ?? [] {
            while let index = rest.firstIndex(where: { RoutingPlanner.slug(slug, matches: $0.endpoint.tag) }) {
                first.append(rest.remove(at: index))
            }
        }
        if preferences.sort != nil || loadBalancing == .priceWeighted {
            rest = Self.stableSorted(rest) { Self.price($0) < Self.price($1) }
        }
        switch preferences.sort {
        case .price?: break
        case .throughput?:
            rest = Self.stableSorted(rest) { (context.throughput($0) ?? -1) > (context.throughput($1) ?? -1) }
        case .latency?:
            rest = Self.stableSorted(rest) { (context.latencySeconds($0) ?? .infinity) < (context.latencySeconds($1) ?? .infinity) }
        case nil:
            if preferences.order == nil, loadBalancing == .priceWeighted,
                let pick = Self.weightedPick(rest.filter { !context.degraded($0) }, using: &random)
            {
                rest.removeAll { $0 == pick }
                rest.insert(pick, at: 0)
            }
        }
        if let minimum = preferences.preferredMinThroughput {
            let meets = { (attempt: PlannedAttempt) in (context.throughput(attempt) ?? .infinity) >= minimum }
            rest = Self.stableSorted(rest) { a, b in meets(a) && !meets(b) }
        }
        if let maximum = preferences.preferredMaxLatencySeconds {
            let meets = { (attempt: PlannedAttempt) in (context.latencySeconds(attempt) ?? 0) <= maximum }
            rest = Self.stableSorted(rest) { a, b in meets(a) && !meets(b) }
        }
        // Health last: it outranks price and preferences, never an explicit order.
        rest = Self.stableSorted(rest) { a, b in !context.degraded(a) && context.degraded(b) }
        return first + rest
    }

    /// Picks one endpoint with probability proportional to 1/price² (free endpoints as if they
    /// cost one atto-dollar per token).
    static func weightedPick(_ candidates: [PlannedAttempt], using random: inout some RandomNumberGenerator) -> PlannedAttempt? {
        guard candidates.count > 1 else { return candidates.first }
        let weights = candidates.map { attempt -> Double in
            let price = Double(max(Self.price(attempt), 1))
            return 1 / (price * price)
        }
        let total = weights.reduce(0, +)
        var target = Double.random(in: 0..<total, using: &random)
        for (attempt, weight) in zip(candidates, weights) {
            if target < weight { return attempt }
            target -= weight
        }
        return candidates.last
    }

    /// A stable sort by a strict "comes before" predicate: equal elements keep their order.
    static func stableSorted(_ items: [PlannedAttempt], by before: (PlannedAttempt, PlannedAttempt) -> Bool) -> [PlannedAttempt] {
        items.enumerated().sorted { a, b in
            if before(a.element, b.element) { return true }
            if before(b.element, a.element) { return false }
            return a.offset < b.offset
        }.map(\.element)
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

    /// `max_price` is USD per million tokens; prices are USD per token.
    func exceeds(_ price: TokenPrice, _ ceilingPerMillion: ExactDecimal) -> Bool {
        var ceilingAttos = ceilingPerMillion.significand
        // USD/M → atto-USD per token: × 1e18 / 1e6 = × 1e12, then undo the decimal's fraction digits.
        var exponent = 12 - ceilingPerMillion.fractionDigits
        while exponent > 0 {
            let (product, overflow) = ceilingAttos.multipliedReportingOverflow(by: 10)
            if overflow { return false }  // a ceiling past 10^38 atto-USD is no ceiling
            ceilingAttos = product
            exponent -= 1
        }
        var price = price.attos
        while exponent < 0 {
            let (product, overflow) = price.multipliedReportingOverflow(by: 10)
            if overflow { return true }  // the price outgrew every ceiling a decimal can write
            price = product
            exponent += 1
        }
        return price > ceilingAttos
    }

    /// A base slug (`deepinfra`) matches every endpoint of that provider (`deepinfra/turbo`);
    /// a full slug matches only itself.
    public static func slug(_ slug: String, matches tag: String) -> Bool {
        let tag = tag.lowercased()
        return tag == slug || (tag.hasPrefix(slug) && tag.dropFirst(slug.count).first == "/")
    }

    func noEndpoints(_ request: ChatRequest, _ exclusions: [(filter: String, tag: String, model: String)]) -> PlanningError {
        var excluded: [PlanningError.Exclusion] = []
        for exclusion in exclusions {
            if let index = excluded.firstIndex(where: { $0.filter == exclusion.filter }) {
                excluded[index].tags.append(exclusion.tag)
            } else {
                excluded.append(.init(filter: exclusion.filter, tags: [exclusion.tag]))
            }
        }
        return .noEndpoints(models: request.models, excludedBy: excluded)
    }
}

/// Where a request may be served beyond its own preferences: what this node's region, the key and
/// the node's provider credentials allow.
public struct PlanningScope: Sendable, Hashable {
    /// The node's region and its routing table, when the operator set one.
    public var routingTable: (region: String, table: RegionRoutingTable)?
    /// The region this key's requests must be served in (data residency), nil for any.
    public var pinnedRegion: String?
    /// Providers this node has credentials for; nil when credentials do not limit the plan.
    public var credentialedProviders: Set<String>?

    public init(
        routingTable: (region: String, table: RegionRoutingTable)? = nil, pinnedRegion: String? = nil,
        credentialedProviders: Set<String>? = nil
    ) {
        self.routingTable = routingTable
        self.pinnedRegion = pinnedRegion
        self.credentialedProviders = credentialedProviders
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.routingTable?.region == rhs.routingTable?.region && lhs.routingTable?.table == rhs.routingTable?.table
            && lhs.pinnedRegion == rhs.pinnedRegion && lhs.credentialedProviders == rhs.credentialedProviders
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(routingTable?.region)
        hasher.combine(routingTable?.table)
        hasher.combine(pinnedRegion)
        hasher.combine(credentialedProviders)
    }
}

/// Why a request has no attempt to make. The gateway turns each case into its HTTP error.
public enum PlanningError: Error, Sendable, Hashable {
    /// One filter and the endpoints it excluded.
    public struct Exclusion: Sendable, Hashable {
        public var filter: String
        public var tags: [String]
    }

    /// The (first) requested model is not in the catalog.
    case invalidModel(String)
    /// Every endpoint of the requested models was excluded, by these filters in this order.
    case noEndpoints(models: [String], excludedBy: [Exclusion])
    /// The region's routing table allows none of the planned endpoints.
    case notAllowedInRegion(model: String, region: String, allowed: [String])
    /// None of the planned endpoints is in the key's pinned region.
    case outsidePinnedRegion(model: String, region: String)
    /// This node has credentials for none of the planned endpoints' providers (slug → name).
    case noCredentials(model: String, providers: [String: String])
    /// An embeddings model asked for chat (`embeddings` true), or a chat model for embeddings.
    case wrongKind(model: String, embeddings: Bool)
}

/// An operator's routing rules for one region (`/api/v1/admin/routing/{region}`), gossiped to every
/// node. Entries name a provider slug (`openai`) or an endpoint tag (`openai/default`).
public struct RegionRoutingTable: Sendable, Hashable, Codable {
    /// Only these endpoints may serve requests in the region; empty allows every endpoint.
    public var allowed: [String]
    /// These go first (in this order) unless the request gave `provider.order`.
    public var preferred: [String]

    public init(allowed: [String] = [], preferred: [String] = []) {
        self.allowed = allowed
        self.preferred = preferred
    }

    static func matches(_ entry: String, _ attempt: PlannedAttempt) -> Bool {
        entry == attempt.provider.slug || entry == attempt.endpoint.tag
    }

    /// The planned attempts this region may make, preferred ones first (a stable reorder).
    public func apply(to attempts: [PlannedAttempt], explicitOrder: Bool) -> [PlannedAttempt] {
        var kept = allowed.isEmpty ? attempts : attempts.filter { attempt in allowed.contains { Self.matches($0, attempt) } }
        guard !explicitOrder, !preferred.isEmpty else { return kept }
        func rank(_ attempt: PlannedAttempt) -> Int { preferred.firstIndex { Self.matches($0, attempt) } ?? preferred.count }
        kept = kept.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
        return kept
    }
}
