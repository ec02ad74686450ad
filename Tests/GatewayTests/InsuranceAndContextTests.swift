import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct InsuranceAndContextTests {
    @Test func aFailedAttemptsTokensAreAnInsuranceExpenseNotACharge() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "drop_after_chunks", "after_chunks": 5}"#)
            let reply = try await node.chat()
            #expect(reply.json?["provider"] == "Azure")
            let record = try #require(try await node.generation(reply.json?["id"]?.stringValue ?? ""))
            let failed = try #require(record.attempts.first)
            #expect(failed.provider == "openai" && failed.providerCost > .zero)
            let insurance = try await node.ledger.entries(account: Billing.SystemAccount.insurance, limit: 10)
            #expect(insurance.count == 1 && insurance[0].amount == failed.providerCost)
            #expect(insurance[0].creditAccount == "provider:openai" && insurance[0].kind == .insurance)
            // the client pays for Azure's answer only
            #expect(try await node.settledBalance().balance == Money(dollars: 10) - record.cost)
            #expect(try await node.ledger.verify().isConsistent)
        }
    }

    @Test func aContextLengthErrorMovesOnlyToAModelWithALargerContext() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "context_length"}"#)
            try await node.fault(#"{"provider": "azure", "kind": "context_length"}"#)
            let larger = try await node.chat(extra: #", "models": ["google/gemini-2.5-flash"]"#)
            #expect(larger.json?["model"] == "google/gemini-2.5-flash")
            let record = try #require(try await node.generation(larger.json?["id"]?.stringValue ?? ""))
            // azure has the same 128k context as openai, so it is skipped
            #expect(record.attempts.map(\.provider) == ["openai", "google-ai-studio"])
            let nowhere = try await node.chat()
            #expect(nowhere.status == 400)
            #expect(nowhere.json?["error"]?["metadata"]?["raw"]?.stringValue?.contains("context_length_exceeded") == true)
            #expect(try await node.simulatorRequests("azure") == 0)
        }
    }
}
