import Foundation

/// The wire format an upstream endpoint speaks.
public enum WireFormat: String, Sendable, Codable, Hashable {
    case openai
    case anthropic
    case gemini
}

/// What a provider does with prompts: used by `provider.data_collection` and `provider.zdr`.
public struct DataPolicy: Sendable, Codable, Hashable {
    /// The provider may train on prompts and completions.
    public var training: Bool
    /// Days the provider keeps prompts (0 = not retained).
    public var retentionDays: Int
    /// Zero data retention: nothing is stored, not even for abuse monitoring.
    public var zdr: Bool

    public init(training: Bool, retentionDays: Int, zdr: Bool) {
        self.training = training
        self.retentionDays = retentionDays
        self.zdr = zdr
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case training
        case retentionDays = "retention_days"
        case zdr
    }
}

/// An upstream provider account: where to send requests and how to authenticate.
public struct ProviderInfo: Sendable, Codable, Hashable {
    public var slug: String
    public var name: String
    public var format: WireFormat
    /// Base URL up to and including the API version segment, e.g. `https://api.openai.com/v1`.
    public var baseURL: String
    /// Environment variable that holds this provider's API key.
    public var apiKeyEnv: String
    public var region: String
    public var dataPolicy: DataPolicy
    public var headquarters: String?
    public var privacyPolicyURL: String?
    public var termsOfServiceURL: String?
    public var statusPageURL: String?

    public init(
        slug: String, name: String, format: WireFormat, baseURL: String, apiKeyEnv: String,
        region: String, dataPolicy: DataPolicy, headquarters: String? = nil,
        privacyPolicyURL: String? = nil, termsOfServiceURL: String? = nil, statusPageURL: String? = nil
    ) {
        self.slug = slug
        self.name = name
        self.format = format
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.region = region
        self.dataPolicy = dataPolicy
        self.headquarters = headquarters
        self.privacyPolicyURL = privacyPolicyURL
        self.termsOfServiceURL = termsOfServiceURL
        self.statusPageURL = statusPageURL
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case slug, name, format, region, headquarters
        case baseURL = "base_url"
        case apiKeyEnv = "api_key_env"
        case dataPolicy = "data_policy"
        case privacyPolicyURL = "privacy_policy_url"
        case termsOfServiceURL = "terms_of_service_url"
        case statusPageURL = "status_page_url"
    }
}

/// Per-token prices of one endpoint, exact as published.
public struct EndpointPricing: Sendable, Codable, Hashable {
    public var prompt: TokenPrice
    public var completion: TokenPrice
    public var inputCacheRead: TokenPrice
    public var inputCacheWrite: TokenPrice
    /// Flat price per request (rare; zero for every shipped endpoint).
    public var request: TokenPrice

    public init(
        prompt: TokenPrice, completion: TokenPrice, inputCacheRead: TokenPrice = .zero,
        inputCacheWrite: TokenPrice = .zero, request: TokenPrice = .zero
    ) {
        self.prompt = prompt
        self.completion = completion
        self.inputCacheRead = inputCacheRead
        self.inputCacheWrite = inputCacheWrite
        self.request = request
    }

    public var isFree: Bool { prompt.isZero && completion.isZero && request.isZero }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case prompt, completion, request
        case inputCacheRead = "input_cache_read"
        case inputCacheWrite = "input_cache_write"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        prompt = try c.decode(TokenPrice.self, forKey: .prompt)
        completion = try c.decode(TokenPrice.self, forKey: .completion)
        inputCacheRead = try c.decodeIfPresent(TokenPrice.self, forKey: .inputCacheRead) ?? .zero
        inputCacheWrite = try c.decodeIfPresent(TokenPrice.self, forKey: .inputCacheWrite) ?? .zero
        request = try c.decodeIfPresent(TokenPrice.self, forKey: .request) ?? .zero
    }
}

/// One provider's offer of one model.
public struct ModelEndpoint: Sendable, Codable, Hashable {
    /// Provider slug (a key of `Catalog.providers`).
    public var provider: String
    /// The slug users put in `provider.order/only/ignore`: the provider slug, or `provider/variant`.
    public var tag: String
    /// The model name the provider expects.
    public var upstreamModel: String
    public var pricing: EndpointPricing
    public var contextLength: Int
    public var maxOutputTokens: Int
    public var quantization: String
    public var supportedParameters: [String]
    /// Overrides the provider's region for this endpoint.
    public var region: String?
    /// Overrides the provider's data policy for this endpoint (free variants log and train).
    public var dataPolicy: DataPolicy?
    /// The most prompt tokens one image may count at this endpoint (catalog `image_tokens`),
    /// nil for `defaultImageTokens`.
    public var imageTokens: Int?

    /// The largest per-image count documented for the shipped formats' current models: OpenAI's
    /// patch-based models cap an image at 1,536 patches (×1.62 for the mini models: 2,489);
    /// Anthropic's at ~1,600 (1.15 megapixels); Gemini's high resolution at 1,120.
    public static let defaultImageTokens = 2_500

    /// What one image part adds to the prompt bound at this endpoint.
    public var imageTokenAllowance: Int { imageTokens ?? Self.defaultImageTokens }

    public init(
        provider: String, tag: String? = nil, upstreamModel: String, pricing: EndpointPricing,
        contextLength: Int, maxOutputTokens: Int, quantization: String = "unknown",
        supportedParameters: [String] = [], region: String? = nil, dataPolicy: DataPolicy? = nil
    ) {
        self.provider = provider
        self.tag = tag ?? provider
        self.upstreamModel = upstreamModel
        self.pricing = pricing
        self.contextLength = contextLength
        self.maxOutputTokens = maxOutputTokens
        self.quantization = quantization
        self.supportedParameters = supportedParameters
        self.region = region
        self.dataPolicy = dataPolicy
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case provider, tag, pricing, quantization, region
        case upstreamModel = "upstream_model"
        case contextLength = "context_length"
        case maxOutputTokens = "max_output_tokens"
        case supportedParameters = "supported_parameters"
        case dataPolicy = "data_policy"
        case imageTokens = "image_tokens"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        provider = try c.decode(String.self, forKey: .provider)
        tag = try c.decodeIfPresent(String.self, forKey: .tag) ?? provider
        upstreamModel = try c.decode(String.self, forKey: .upstreamModel)
        pricing = try c.decode(EndpointPricing.self, forKey: .pricing)
        contextLength = try c.decode(Int.self, forKey: .contextLength)
        maxOutputTokens = try c.decodeIfPresent(Int.self, forKey: .maxOutputTokens) ?? min(4096, contextLength)
        quantization = try c.decodeIfPresent(String.self, forKey: .quantization) ?? "unknown"
        supportedParameters = try c.decodeIfPresent([String].self, forKey: .supportedParameters) ?? []
        region = try c.decodeIfPresent(String.self, forKey: .region)
        dataPolicy = try c.decodeIfPresent(DataPolicy.self, forKey: .dataPolicy)
        imageTokens = try c.decodeIfPresent(Int.self, forKey: .imageTokens)
    }
}

/// A routable model id and the endpoints that serve it.
public struct CatalogModel: Sendable, Codable, Hashable {
    /// `author/slug[:variant]`, e.g. `openai/gpt-4o-mini` or `meta-llama/llama-3.3-70b-instruct:free`.
    public var id: String
    public var name: String
    public var author: String
    public var created: Int
    public var description: String
    public var contextLength: Int
    public var inputModalities: [String]
    public var outputModalities: [String]
    public var tokenizer: String
    public var supportedParameters: [String]
    public var endpoints: [ModelEndpoint]
    /// For an embeddings model (`output_modalities: ["embeddings"]`): its vectors' length.
    public var embeddingDimensions: Int?
    /// Whether a request may ask for shorter vectors (`dimensions`), as OpenAI's v3 and Gemini's allow.
    public var reducibleDimensions: Bool = false

    /// An embeddings model: it answers `/embeddings`, never chat.
    public var isEmbeddings: Bool { outputModalities.contains("embeddings") }

    public init(
        id: String, name: String, author: String, created: Int = 0, description: String = "",
        contextLength: Int, inputModalities: [String] = ["text"], outputModalities: [String] = ["text"],
        tokenizer: String = "Other", supportedParameters: [String] = [], endpoints: [ModelEndpoint]
    ) {
        self.id = id
        self.name = name
        self.author = author
        self.created = created
        self.description = description
        self.contextLength = contextLength
        self.inputModalities = inputModalities
        self.outputModalities = outputModalities
        self.tokenizer = tokenizer
        self.supportedParameters = supportedParameters
        self.endpoints = endpoints
    }

    /// True for `:free` variants: zero-priced, rate-limited by the free tier.
    public var isFreeVariant: Bool { id.hasSuffix(":free") }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case id, name, author, created, description, tokenizer, endpoints
        case contextLength = "context_length"
        case inputModalities = "input_modalities"
        case outputModalities = "output_modalities"
        case supportedParameters = "supported_parameters"
        case embeddingDimensions = "embedding_dimensions"
        case reducibleDimensions = "reducible_dimensions"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        embeddingDimensions = try c.decodeIfPresent(Int.self, forKey: .embeddingDimensions)
        reducibleDimensions = try c.decodeIfPresent(Bool.self, forKey: .reducibleDimensions) ?? false
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? id
        author = try c.decodeIfPresent(String.self, forKey: .author) ?? String(id.split(separator: "/").first ?? "")
        created = try c.decodeIfPresent(Int.self, forKey: .created) ?? 0
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        endpoints = try c.decode([ModelEndpoint].self, forKey: .endpoints)
        contextLength =
            try c.decodeIfPresent(Int.self, forKey: .contextLength)
            ?? endpoints.map(\.contextLength).max() ?? 0
        inputModalities = try c.decodeIfPresent([String].self, forKey: .inputModalities) ?? ["text"]
        outputModalities = try c.decodeIfPresent([String].self, forKey: .outputModalities) ?? ["text"]
        tokenizer = try c.decodeIfPresent(String.self, forKey: .tokenizer) ?? "Other"
        supportedParameters =
            try c.decodeIfPresent([String].self, forKey: .supportedParameters)
            ?? Array(Set(endpoints.flatMap(\.supportedParameters))).sorted()
    }
}

/// Every model and provider a node can route to. Immutable once loaded.
public struct Catalog: Sendable {
    public private(set) var providers: [String: ProviderInfo]
    /// Models in display order.
    public private(set) var models: [CatalogModel]
    private var modelIndex: [String: Int]

    public init(providers: [ProviderInfo], models: [CatalogModel]) {
        self.providers = Dictionary(providers.map { ($0.slug, $0) }, uniquingKeysWith: { _, new in new })
        self.models = models
        self.modelIndex = [:]
        reindex()
    }

    private mutating func reindex() {
        modelIndex = Dictionary(models.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { _, new in new })
    }

    public func model(id: String) -> CatalogModel? {
        modelIndex[id].map { models[$0] }
    }

    public func provider(_ slug: String) -> ProviderInfo? { providers[slug] }

    /// The region an endpoint's requests are processed in.
    public func region(of endpoint: ModelEndpoint) -> String {
        endpoint.region ?? providers[endpoint.provider]?.region ?? "global"
    }

    /// The data policy that applies to an endpoint.
    public func dataPolicy(of endpoint: ModelEndpoint) -> DataPolicy {
        endpoint.dataPolicy ?? providers[endpoint.provider]?.dataPolicy
            ?? DataPolicy(training: true, retentionDays: 30, zdr: false)
    }

    /// Adds or replaces providers and models (the config file's `providers` and `models`).
    /// A model whose id already exists is replaced whole.
    public mutating func merge(providers newProviders: [ProviderInfo], models newModels: [CatalogModel]) {
        for provider in newProviders { providers[provider.slug] = provider }
        for model in newModels {
            if let index = modelIndex[model.id] { models[index] = model } else { models.append(model) }
        }
        reindex()
    }

    /// Points every provider at one base URL: `base/<slug>/v1`, the layout of the simulator.
    public mutating func pointAllProviders(at simulatorBase: String) {
        let base = simulatorBase.hasSuffix("/") ? String(simulatorBase.dropLast()) : simulatorBase
        for slug in providers.keys {
            let suffix = providers[slug]!.format == .gemini ? "v1beta" : "v1"
            providers[slug]!.baseURL = "\(base)/\(slug)/\(suffix)"
        }
    }

    /// Checks that every endpoint names a known provider.
    public func validate() throws {
        for model in models {
            guard !model.endpoints.isEmpty else { throw CatalogError("model \(model.id) has no endpoints") }
            for endpoint in model.endpoints where providers[endpoint.provider] == nil {
                throw CatalogError("model \(model.id) names unknown provider \(endpoint.provider)")
            }
        }
    }
}

public struct CatalogError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The on-disk form of a catalog (shipped `catalog.json` and the config file's catalog part).
public struct CatalogDocument: Sendable, Codable {
    public var providers: [ProviderInfo]?
    public var models: [CatalogModel]?

    public init(providers: [ProviderInfo]? = nil, models: [CatalogModel]? = nil) {
        self.providers = providers
        self.models = models
    }
}

extension Catalog {
    /// The catalog shipped with Signalbox (`Sources/SignalboxCore/Resources/catalog.json`).
    public static func shipped() throws -> Catalog {
        guard let url = Bundle.module.url(forResource: "catalog", withExtension: "json") else {
            throw CatalogError("the shipped catalog.json resource is missing")
        }
        return try load(data: Data(contentsOf: url))
    }

    public static func load(data: Data) throws -> Catalog {
        let document = try JSONDecoder().decode(CatalogDocument.self, from: data)
        let catalog = Catalog(providers: document.providers ?? [], models: document.models ?? [])
        try catalog.validate()
        return catalog
    }
}

/// The keys each catalog entry may have, for checking a configuration file's `providers` and
/// `models` (an unknown key there is a misspelling, not something to ignore).
public enum CatalogKeys {
    public static let dataPolicy = DataPolicy.CodingKeys.allCases.map(\.rawValue)
    public static let provider = ProviderInfo.CodingKeys.allCases.map(\.rawValue)
    public static let pricing = EndpointPricing.CodingKeys.allCases.map(\.rawValue)
    public static let endpoint = ModelEndpoint.CodingKeys.allCases.map(\.rawValue)
    public static let model = CatalogModel.CodingKeys.allCases.map(\.rawValue)
}
