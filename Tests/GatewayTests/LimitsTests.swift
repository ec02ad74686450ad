import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct LimitsTests {
    @Test func aKeyNeverSpendsBeyondItsLimit() async throws {
        try await TestNode.with { node in
            let secret = APIKeyFormat.generate()
            try await node.ledger.insertKey(
                KeyRecord(
                    id: "limited", accountID: node.account, hash: APIKeyFormat.hash(secret),
                    label: APIKeyFormat.label(secret), name: "limited",
                    limit: Money(decimal: "0.0001")!, limitReset: "daily"))
            var statuses: [Int] = []
            for _ in 0..<12 {
                let reply = try await node.request(
                    "/api/v1/chat/completions",
                    body: """
                        {"model": "openai/gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Spend a little"}]}
                        """, key: secret)
                statuses.append(reply.status)
                if reply.status == 402 {
                    #expect(reply.json?["error"]?["metadata"]?["limit_source"] == "key")
                    break
                }
            }
            #expect(statuses.first == 200 && statuses.last == 402)
            let usage = try await node.ledger.keyUsage(keyID: "limited", now: Date())
            #expect(usage.daily <= Money(decimal: "0.0001")! && usage.daily > .zero)
        }
    }

    @Test func concurrentRequestsOnALimitedKeyNeverSpendBeyondItsLimit() async throws {
        try await TestNode.with { node in
            let secret = APIKeyFormat.generate()
            let limit = Money(decimal: "0.0002")!
            try await node.ledger.insertKey(
                KeyRecord(
                    id: "burst", accountID: node.account, hash: APIKeyFormat.hash(secret),
                    label: APIKeyFormat.label(secret), name: "burst", limit: limit))
            let body = """
                {"model": "openai/gpt-4o-mini", "max_tokens": 50, "provider": {"order": ["openai"]},
                 "messages": [{"role": "user", "content": "Everyone at once"}]}
                """
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<24 { group.addTask { try await node.request("/api/v1/chat/completions", body: body, key: secret).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.contains(200) && statuses.contains(402))
            #expect(Set(statuses).isSubset(of: [200, 402]))
            let usage = try await node.ledger.keyUsage(keyID: "burst", now: Date())
            #expect(usage.total > .zero && usage.total <= limit, "spent \(usage.total) of \(limit)")
            _ = try await node.settledBalance()  // and nothing stays reserved
        }
    }

    /// Free-tier minutes are calendar minutes: a test starts well inside one so its burst does not straddle two.
    static func awayFromAMinuteBoundary() async throws {
        let second = Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 60)
        if second > 40 { try await Task.sleep(for: .seconds(61 - second)) }
    }

    @Test func concurrentFreeRequestsNeverExceedTheLimit() async throws {
        try await TestNode.with { node in
            try await Self.awayFromAMinuteBoundary()
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<30 { group.addTask { try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free").status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == FreeTier.requestsPerMinute, "\(statuses)")
            #expect(statuses.filter { $0 == 429 }.count == 30 - FreeTier.requestsPerMinute)
        }
    }

    @Test func freeModelsAllowTwentyRequestsAMinute() async throws {
        try await TestNode.with { node in
            try await Self.awayFromAMinuteBoundary()
            for index in 0..<20 {
                let reply = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
                #expect(reply.status == 200, "request \(index)")
            }
            let limited = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
            #expect(limited.status == 429)
            #expect(limited.header("X-RateLimit-Limit") == "20" && limited.header("X-RateLimit-Remaining") == "0")
            #expect(limited.header("X-RateLimit-Reset") != nil && limited.header("Retry-After") != nil)
            // paid models are not limited, and /key reports the day's free requests
            #expect(try await node.chat().status == 200)
            let key = try await node.request("/api/v1/key", method: .GET)
            #expect(key.json?["data"]?["free_model_daily_requests"] == ["limit": 50, "used": 20, "remaining": 30])
        }
    }
}
