/// Token counts of one completion, as the upstream reported them.
public struct TokenUsage: Sendable, Hashable, Codable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens read from the provider's prompt cache (billed at the cache-read price).
    public var cachedTokens: Int
    /// Prompt tokens written to the provider's prompt cache (billed at the cache-write price).
    public var cacheWriteTokens: Int
    /// Completion tokens spent on reasoning (billed as completion tokens).
    public var reasoningTokens: Int

    public init(promptTokens: Int = 0, completionTokens: Int = 0, cachedTokens: Int = 0,
                cacheWriteTokens: Int = 0, reasoningTokens: Int = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.cacheWriteTokens = cacheWriteTokens
        self.reasoningTokens = reasoningTokens
    }

    public var totalTokens: Int { promptTokens + completionTokens }

    /// Reads an OpenAI-style `usage` object.
    public init?(openAI usage: JSONValue?) {
        guard let usage, let object = usage.objectValue else { return nil }
        promptTokens = object["prompt_tokens"]?.intValue ?? 0
        completionTokens = object["completion_tokens"]?.intValue ?? 0
        cachedTokens = usage["prompt_tokens_details"]?["cached_tokens"]?.intValue ?? 0
        cacheWriteTokens = usage["prompt_tokens_details"]?["cache_write_tokens"]?.intValue ?? 0
        reasoningTokens = usage["completion_tokens_details"]?["reasoning_tokens"]?.intValue ?? 0
    }
}

/// What a completion costs at an endpoint's prices, computed exactly and rounded once.
public struct CostBreakdown: Sendable, Hashable {
    public var prompt: Money
    public var completion: Money
    public var total: Money

    public init(usage: TokenUsage, pricing: EndpointPricing) {
        let uncached = max(usage.promptTokens - usage.cachedTokens - usage.cacheWriteTokens, 0)
        let promptAttos = pricing.prompt.attos(for: uncached)
            + pricing.inputCacheRead.attos(for: usage.cachedTokens)
            + (pricing.inputCacheWrite.isZero ? pricing.prompt : pricing.inputCacheWrite).attos(for: usage.cacheWriteTokens)
        let completionAttos = pricing.completion.attos(for: usage.completionTokens)
        prompt = Money(roundingAttos: promptAttos)
        completion = Money(roundingAttos: completionAttos)
        total = Money(roundingAttos: promptAttos + completionAttos + pricing.request.attos)
    }

    /// The breakdown as the client is charged it: `total` is `charged` (at most the reservation),
    /// the parts stay what the upstream's counts cost.
    public func charged(_ charged: Money) -> CostBreakdown {
        var copy = self
        copy.total = charged
        return copy
    }

    public static let zero = CostBreakdown()
    private init() { prompt = .zero; completion = .zero; total = .zero }
}
