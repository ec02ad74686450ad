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

    /// The largest count believed from an upstream (2^40, about 10^12): counts are clamped to
    /// 0…this when read, so sums and differences of them can never overflow.
    public static let maximumCount = 1 << 40

    /// A count as an upstream reported it, clamped to 0…`maximumCount`.
    public static func count(_ value: JSONValue?) -> Int {
        guard let value else { return 0 }
        if let count = value.intValue { return min(max(count, 0), maximumCount) }
        if let number = value.numericValue, number.isFinite { return number > 0 ? min(Int(min(number, 1e13)), maximumCount) : 0 }
        return 0
    }

    public init(
        promptTokens: Int = 0, completionTokens: Int = 0, cachedTokens: Int = 0,
        cacheWriteTokens: Int = 0, reasoningTokens: Int = 0
    ) {
        let clamp = { (value: Int) in min(max(value, 0), 4 * TokenUsage.maximumCount) }
        self.promptTokens = clamp(promptTokens)
        self.completionTokens = clamp(completionTokens)
        self.cachedTokens = clamp(cachedTokens)
        self.cacheWriteTokens = clamp(cacheWriteTokens)
        self.reasoningTokens = clamp(reasoningTokens)
    }

    public var totalTokens: Int { promptTokens + completionTokens }

    /// Reads an OpenAI-style `usage` object.
    public init?(openAI usage: JSONValue?) {
        guard let usage, let object = usage.objectValue else { return nil }
        promptTokens = Self.count(object["prompt_tokens"])
        completionTokens = Self.count(object["completion_tokens"])
        cachedTokens = Self.count(usage["prompt_tokens_details"]?["cached_tokens"])
        cacheWriteTokens = Self.count(usage["prompt_tokens_details"]?["cache_write_tokens"])
        reasoningTokens = Self.count(usage["completion_tokens_details"]?["reasoning_tokens"])
    }
}

/// What a completion costs at an endpoint's prices, computed exactly and rounded once.
public struct CostBreakdown: Sendable, Hashable {
    public var prompt: Money
    public var completion: Money
    public var total: Money

    public init(usage: TokenUsage, pricing: EndpointPricing) {
        let uncached = max(usage.promptTokens - usage.cachedTokens - usage.cacheWriteTokens, 0)
        let promptAttos =
            pricing.prompt.attos(for: uncached)
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
    private init() {
        prompt = .zero
        completion = .zero
        total = .zero
    }
}
