import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import SignalboxCore

extension ChatPipeline {
    // MARK: OpenAI response shapes

    /// The non-streamed `chat.completion` for a successful attempt (also what an idempotent
    /// retry gets back).
    static func completion(_ prepared: PreparedChat, result: AttemptResult, cost: CostBreakdown) -> JSONValue {
        [
            "id": .string(prepared.generationID), "provider": .string(result.attempt.provider.name),
            "model": .string(result.attempt.model.id), "object": "chat.completion", "created": .int(prepared.created),
            "system_fingerprint": result.accumulator.systemFingerprint.map { .string($0) } ?? nil,
            "choices": .array(result.accumulator.completedChoices()),
            "usage": usageJSON(result.usage ?? TokenUsage(), cost: cost),
        ]
    }

    static func usageJSON(_ usage: TokenUsage, cost: CostBreakdown) -> JSONValue {
        [
            "prompt_tokens": .int(Int64(usage.promptTokens)), "completion_tokens": .int(Int64(usage.completionTokens)),
            "total_tokens": .int(Int64(usage.totalTokens)),
            "prompt_tokens_details": [
                "cached_tokens": .int(Int64(usage.cachedTokens)), "cache_write_tokens": .int(Int64(usage.cacheWriteTokens)),
                "audio_tokens": 0,
            ],
            "completion_tokens_details": ["reasoning_tokens": .int(Int64(usage.reasoningTokens))],
            "cost": .number(cost.total), "is_byok": false,
            "cost_details": [
                "upstream_inference_cost": nil, "upstream_inference_prompt_cost": .number(cost.prompt),
                "upstream_inference_completions_cost": .number(cost.completion),
            ],
        ]
    }
}
