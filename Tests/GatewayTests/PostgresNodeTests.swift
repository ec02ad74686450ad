import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

/// The same node on the PostgreSQL ledger (runs in CI, where `.ci/run` starts PostgreSQL).
@Suite(.enabled(if: TestDatabase.required, "no PostgreSQL configured")) struct PostgresNodeTests {
    @Test func aNodeOnPostgresChargesFailsOverAndKeepsTheLedgerConsistent() async throws {
        try await TestNode.with(postgres: true) { node in
            let plain = try await node.chat()
            #expect(plain.status == 200)
            let streamed = try await node.chat(stream: true)
            #expect(TestNode.events(streamed.body).last == "[DONE]")
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 503, "count": 1}"#)
            let failedOver = try await node.chat(extra: #", "provider": {"order": ["openai"]}"#)
            #expect(failedOver.json?["provider"] == "Azure")
            let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
            #expect(charges.count == 3)
            let balance = try await node.settledBalance()
            #expect(balance.available == balance.balance)
            #expect(balance.balance == Money(dollars: 10) - charges.reduce(Money.zero) { $0 + $1.amount })
            #expect(try await node.ledger.verify().isConsistent)
        }
    }
}
