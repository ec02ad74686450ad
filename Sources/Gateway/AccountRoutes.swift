import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

extension RouterAPI {
    // MARK: Account endpoints

    func keyInfo(_ key: KeyRecord) async throws -> Response {
        let ledger = dependencies.ledger
        let usage = try await ledger.keyUsage(keyID: key.id, now: Date())
        let purchasedTotal = try await ledger.purchasedTotal(account: key.accountID)
        let purchased = purchasedTotal > .zero
        let dailyFree = FreeTier.dailyLimit(purchased: purchasedTotal)
        let usedFree = try await ledger.freeRequestCount(account: key.accountID, since: [UsageWindows(now: Date()).day])[0]
        let limitUsage = usage.spent(resetting: key.limitReset)
        let remaining = key.limit.map { max($0 - limitUsage, .zero) }
        return JSONResponse.make([
            "data": [
                "label": .string(key.label), "name": .string(key.name),
                "limit": key.limit.map { .number($0) } ?? nil, "limit_remaining": remaining.map { .number($0) } ?? nil,
                "limit_reset": key.limitReset.map { .string($0) } ?? nil, "include_byok_in_limit": false,
                "usage": .number(usage.total), "usage_daily": .number(usage.daily), "usage_weekly": .number(usage.weekly),
                "usage_monthly": .number(usage.monthly),
                "byok_usage": 0, "byok_usage_daily": 0, "byok_usage_weekly": 0, "byok_usage_monthly": 0,
                "is_free_tier": .bool(!purchased), "is_management_key": .bool(key.isAdmin), "is_provisioning_key": .bool(key.isAdmin),
                "expires_at": key.expiresAt.map { .string(ISO8601DateFormatter().string(from: $0)) } ?? nil,
                "creator_user_id": .string(key.accountID), "organization_id": nil, "workspace_id": nil,
                "allowed_data_regions": ["global", "europe", "us"], "budgets": [], "effective_budget": nil,
                "free_model_daily_requests": [
                    "limit": .int(Int64(dailyFree)), "remaining": .int(Int64(max(dailyFree - usedFree, 0))),
                    "used": .int(Int64(usedFree)),
                ],
                "rate_limit": ["requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."],
            ]
        ])
    }

    func credits(_ key: KeyRecord) async throws -> Response {
        let totals = try await dependencies.ledger.creditTotals(account: key.accountID)
        return JSONResponse.make(["data": ["total_credits": .number(totals.credits), "total_usage": .number(totals.usage)]])
    }

    func generation(_ request: Request, key: KeyRecord) async throws -> Response {
        guard let id = request.uri.queryParameters.get("id"), !id.isEmpty else {
            throw APIError.badRequest("The 'id' query parameter is required")
        }
        guard let record = try await dependencies.ledger.generation(id: id), key.isAdmin || record.accountID == key.accountID else {
            throw APIError.notFound("Generation \(id) not found")
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return JSONResponse.make([
            "data": [
                "id": .string(record.id), "upstream_id": record.upstreamID.map { .string($0) } ?? nil,
                "request_id": .string(record.id), "created_at": .string(formatter.string(from: record.createdAt)),
                "model": .string(record.model), "provider_name": record.providerName.map { .string($0) } ?? nil,
                "provider_tag": record.providerTag.map { .string($0) } ?? nil,
                "router": nil, "api_type": "completions", "app_id": nil, "origin": "", "http_referer": nil, "user_agent": nil,
                "external_user": nil, "streamed": .bool(record.streamed), "cancelled": .bool(record.cancelled),
                "is_byok": false, "latency": .int(Int64(record.latencyMs)), "generation_time": .int(Int64(record.generationTimeMs)),
                "moderation_latency": nil,
                "tokens_prompt": .int(Int64(record.usage.promptTokens)), "tokens_completion": .int(Int64(record.usage.completionTokens)),
                "native_tokens_prompt": .int(Int64(record.usage.promptTokens)),
                "native_tokens_completion": .int(Int64(record.usage.completionTokens)),
                "native_tokens_reasoning": .int(Int64(record.usage.reasoningTokens)),
                "native_tokens_cached": .int(Int64(record.usage.cachedTokens)), "native_tokens_completion_images": 0,
                "num_media_prompt": 0, "num_media_completion": 0, "num_input_audio_prompt": 0, "num_search_results": 0,
                "num_fetches": 0, "finish_reason": record.finishReason.map { .string($0) } ?? nil,
                "native_finish_reason": record.nativeFinishReason.map { .string($0) } ?? nil,
                "total_cost": .number(record.cost), "usage": .number(record.cost), "upstream_inference_cost": nil,
                "cache_discount": nil, "data_region": "global", "service_tier": nil, "preset_id": nil, "session_id": nil,
                "workspace_id": nil, "web_search_engine": nil,
                "provider_responses": .array(
                    record.attempts.map { attempt in
                        [
                            "provider": .string(attempt.providerName), "tag": .string(attempt.provider),
                            "model": .string(attempt.model), "status": Int64(attempt.status).map { .int($0) } ?? nil,
                            "error": attempt.error.map { .string($0) } ?? nil, "latency": .int(Int64(attempt.latencyMs)),
                        ]
                    }),
            ]
        ])
    }
}
