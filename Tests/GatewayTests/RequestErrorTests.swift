import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct RequestErrorTests {
    @Test func missingOrUnknownKeyIs401() async throws {
        try await TestNode.with { node in
            let missing = try await node.request("/api/v1/chat/completions", body: "{}", authorized: false)
            #expect(missing.status == 401)
            #expect(missing.json?["error"]?["code"] == 401)
            let unknown = try await node.request("/api/v1/key", method: .GET, key: "sk-sb-v1-unknown")
            #expect(unknown.status == 401)
        }
    }

    @Test func oversizedBodyIs413() async throws {
        try await TestNode.with(configure: { $0.maxBodyBytes = 2048 }) { node in
            let big = String(repeating: "x", count: 4096)
            let reply = try await node.request(
                "/api/v1/chat/completions", body: #"{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "\#(big)"}]}"#)
            #expect(reply.status == 413)
            #expect(reply.json?["error"]?["code"] == 413)
        }
    }

    @Test func noMatchingEndpointIs404SayingWhichFilter() async throws {
        try await TestNode.with { node in
            let reply = try await node.chat(extra: #", "provider": {"only": ["nobody"]}"#)
            #expect(reply.status == 404)
            #expect(reply.json?["error"]?["message"]?.stringValue?.contains("only excluded openai, azure") == true)
        }
    }

    @Test func emptyAccountIsRefusedEvenOnFreeModels() async throws {
        try await TestNode.with(credits: "0") { node in
            let reply = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
            #expect(reply.status == 402)
        }
    }

    @Test func unaffordableRequestIs402WithTheAffordableTokenCount() async throws {
        try await TestNode.with(credits: "0.01") { node in
            let reply = try await node.request(
                "/api/v1/chat/completions",
                body: """
                    {"model": "openai/gpt-4o", "max_tokens": 16000, "messages": [{"role": "user", "content": "hi"}]}
                    """)
            #expect(reply.status == 402)
            let metadata = reply.json?["error"]?["metadata"]
            #expect(metadata?["requested_tokens"] == 16000)
            // $0.01 minus the prompt estimate, at $10/M completion tokens: just under 1,000 tokens
            #expect((metadata?["affordable_tokens"]?.intValue ?? 0) > 990 && (metadata?["affordable_tokens"]?.intValue ?? 0) < 1000)
        }
    }

    @Test func endpointsWithoutCredentialsAreSkippedAnd503WhenNoneRemain() async throws {
        try await TestNode.with(providersWithoutKeys: ["openai"]) { node in
            let fallback = try await node.chat()
            #expect(fallback.json?["provider"] == "Azure")
        }
        try await TestNode.with(providersWithoutKeys: ["openai", "azure"]) { node in
            let reply = try await node.chat()
            #expect(reply.status == 503)
            #expect(reply.json?["error"]?["message"]?.stringValue?.contains("no API key is configured") == true)
            #expect(try await node.simulatorRequests("openai") == 0)
        }
    }

    @Test func unknownRoutesAndWrongMethodsAreJSON() async throws {
        try await TestNode.with { node in
            let missing = try await node.request("/api/v1/nothing", method: .GET)
            #expect(missing.status == 404 && missing.json?["error"]?["code"] == 404)
            let wrong = try await node.request("/api/v1/chat/completions", method: .GET)
            #expect(wrong.status == 405 && wrong.json?["error"]?["code"] == 405)
            #expect(wrong.header("Allow") == "POST")
        }
    }

    @Test func readinessFollowsTheNodeWhileLivenessStays() async throws {
        try await TestNode.with { node in
            let ready = try await node.request("/readyz", method: .GET, authorized: false)
            #expect(ready.status == 200)
            #expect(ready.json?["status"] == "ready" && ready.json?["ledger"] == "ok" && ready.json?["spooled_settlements"] == 0)
            // Draining (SIGTERM): balancers must see 503 at once, while the process stays alive.
            node.readiness.set(false)
            let draining = try await node.request("/readyz", method: .GET, authorized: false)
            #expect(draining.status == 503 && draining.json?["error"]?["metadata"]?["error_type"] == "node_not_ready")
            #expect(try await node.request("/healthz", method: .GET, authorized: false).status == 200)
            node.readiness.set(true)
            #expect(try await node.request("/readyz", method: .GET, authorized: false).status == 200)
        }
    }
}
