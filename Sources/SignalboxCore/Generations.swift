import Foundation

/// One upstream attempt, for `/generation` and error metadata.
public struct AttemptRecord: Sendable, Hashable, Codable {
    public var provider: String
    public var providerName: String
    public var model: String
    public var status: String
    public var latencyMs: Int
    public var error: String?
    /// What the attempt cost the operator at the provider (insured, never charged to the client).
    public var providerCost: Money

    public init(
        provider: String, providerName: String, model: String, status: String, latencyMs: Int,
        error: String? = nil, providerCost: Money = .zero
    ) {
        self.provider = provider
        self.providerName = providerName
        self.model = model
        self.status = status
        self.latencyMs = latencyMs
        self.error = error
        self.providerCost = providerCost
    }

    enum CodingKeys: String, CodingKey {
        case provider, model, status, error
        case providerName = "provider_name"
        case latencyMs = "latency"
        case providerCost = "provider_cost"
    }

    /// The attempts as stored in a generation row: the same JSON `Codable` writes, built
    /// directly (settling a batch writes hundreds of these).
    public static func json(_ attempts: [AttemptRecord]) -> String {
        JSONWriter.string(
            .array(
                attempts.map { attempt in
                    var object: JSONObject = [
                        "provider": .string(attempt.provider), "provider_name": .string(attempt.providerName),
                        "model": .string(attempt.model), "status": .string(attempt.status), "latency": .int(Int64(attempt.latencyMs)),
                        "provider_cost": .string(attempt.providerCost.decimalString),
                    ]
                    if let error = attempt.error { object["error"] = .string(error) }
                    return .object(object)
                }))
    }
}

/// Everything `/api/v1/generation` reports about one request.
public struct GenerationRecord: Sendable, Hashable, Codable {
    public var id: String
    public var accountID: String
    public var keyID: String?
    public var model: String
    public var providerName: String?
    public var providerTag: String?
    public var upstreamID: String?
    public var streamed: Bool
    public var cancelled: Bool
    public var finishReason: String?
    public var nativeFinishReason: String?
    public var usage: TokenUsage
    public var cost: Money
    public var latencyMs: Int
    public var generationTimeMs: Int
    public var attempts: [AttemptRecord]
    public var createdAt: Date

    public init(
        id: String, accountID: String, keyID: String?, model: String, providerName: String?, providerTag: String?,
        upstreamID: String?, streamed: Bool, cancelled: Bool, finishReason: String?, nativeFinishReason: String?,
        usage: TokenUsage, cost: Money, latencyMs: Int, generationTimeMs: Int, attempts: [AttemptRecord],
        createdAt: Date
    ) {
        self.id = id
        self.accountID = accountID
        self.keyID = keyID
        self.model = model
        self.providerName = providerName
        self.providerTag = providerTag
        self.upstreamID = upstreamID
        self.streamed = streamed
        self.cancelled = cancelled
        self.finishReason = finishReason
        self.nativeFinishReason = nativeFinishReason
        self.usage = usage
        self.cost = cost
        self.latencyMs = latencyMs
        self.generationTimeMs = generationTimeMs
        self.attempts = attempts
        self.createdAt = createdAt
    }
}
