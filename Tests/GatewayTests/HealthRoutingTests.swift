import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct HealthRoutingTests {
    @Test func aProviderThatJustFailedIsTriedLastAndReportedDegraded() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 500, "count": 1}"#)
            let first = try await node.chat()
            let firstRecord = try #require(try await node.generation(first.json?["id"]?.stringValue ?? ""))
            #expect(firstRecord.attempts.map(\.provider) == ["openai", "azure"])
            // the fault is gone, but openai failed seconds ago: azure goes first now
            let second = try await node.chat()
            let secondRecord = try #require(try await node.generation(second.json?["id"]?.stringValue ?? ""))
            #expect(secondRecord.attempts.map(\.provider) == ["azure"])
            let endpoints = try await node.request("/api/v1/models/openai/gpt-4o-mini/endpoints", method: .GET, authorized: false)
            let listed = try #require(endpoints.json?["data"]?["endpoints"]?.arrayValue)
            let openai = try #require(listed.first { $0["tag"] == "openai" })
            let azure = try #require(listed.first { $0["tag"] == "azure" })
            #expect(openai["status"] == -1 && openai["uptime_last_5m"] == 0)
            #expect(azure["status"] == 0 && azure["uptime_last_5m"] == 100)
            // an explicit order still reaches the degraded provider first
            let pinned = try await node.chat(extra: #", "provider": {"order": ["openai"]}"#)
            #expect(pinned.json?["provider"] == "OpenAI")
        }
    }
}
