import Foundation
import Gateway
import Ledger
import SignalboxCore
import Testing

/// Upstreams that report more than the router could foresee, clients that multiply output, and
/// amounts at the edge of the ledger's range: no customer balance goes below zero, the charge
/// never exceeds the reservation, and the provider is still paid what it billed.
@Suite struct MoneyBoundsTests {
    /// Sums what the client was told it paid, and checks the ledger agrees.
    static func reportedCost(_ reply: TestNode.Reply) -> Money {
        // Read from the body's text, exactly, never through Double.
        guard let range = reply.body.range(of: #""cost":"#) else { return .zero }
        let text = reply.body[range.upperBound...].prefix { "0123456789.-".contains($0) }
        return Money(decimal: String(text)) ?? .zero
    }

    @Test func anUpstreamReportingFortyTimesTheTokensNeverOverspendsTheAccount() async throws {
        try await TestNode.with(credits: "0.05") { node in
            try await node.fault(#"{"provider": "openai", "kind": "usage", "factor": 40}"#)
            var served = 0, refused = 0
            var reported = Money.zero
            for _ in 0..<400 {
                let reply = try await node.request(
                    "/api/v1/chat/completions",
                    body: """
                        {"model": "openai/gpt-4o-mini", "max_tokens": 200,
                         "messages": [{"role": "user", "content": "\(String(repeating: "hi ", count: 600))"}]}
                        """)
                if reply.status == 402 {
                    refused += 1
                    break
                }
                #expect(reply.status == 200)
                served += 1
                reported += Self.reportedCost(reply)
                let balance = try await node.ledger.balance(account: node.account)
                #expect(balance.balance >= .zero && balance.available >= .zero)
            }
            #expect(served > 10 && refused == 1)
            let balance = try await node.settledBalance()
            #expect(balance.balance >= .zero)
            let (credits, usage) = try await node.ledger.creditTotals(account: node.account)
            #expect(credits == Money(decimal: "0.05")! && usage <= credits)
            #expect(usage == reported, "the client was told it paid \(reported), the ledger charged \(usage)")
            // The provider is owed what it reported; the part beyond each reservation is the operator's.
            let overage = try await node.ledger.balance(account: Billing.SystemAccount.overage).balance
            #expect(overage < .zero)
            let payable = try await node.ledger.balance(account: Billing.SystemAccount.provider("openai")).balance
            #expect(payable == usage - overage)
            let metrics = try await node.request("/metrics", method: .GET, authorized: false)
            #expect(metrics.body.contains(#"signalbox_ledger_overage_usd_total{provider="openai"}"#))
            #expect(try await node.ledger.verify().isConsistent)
        }
    }

    @Test func everyChoiceOfNIsReservedAndAnUnaffordableNIs402() async throws {
        try await TestNode.with(credits: "0.002") { node in
            let body = """
                {"model": "openai/gpt-4o-mini", "n": 64, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
                """
            let refused = try await node.request("/api/v1/chat/completions", body: body)
            #expect(refused.status == 402)
            #expect(refused.json?["error"]?["metadata"]?["affordable_tokens"]?.intValue ?? 1000 < 100)
            let tooMany = try await node.request(
                "/api/v1/chat/completions",
                body: """
                    {"model": "openai/gpt-4o-mini", "n": 129, "messages": [{"role": "user", "content": "hi"}]}
                    """)
            #expect(tooMany.status == 400 && tooMany.body.contains("'n'"))
            let few = try await node.request(
                "/api/v1/chat/completions",
                body: """
                    {"model": "openai/gpt-4o-mini", "n": 4, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
                    """)
            #expect(few.status == 200)
            #expect(few.json?["choices"]?.arrayValue?.count == 4)
            let balance = try await node.settledBalance()
            #expect(balance.balance >= .zero && balance.balance == Money(decimal: "0.002")! - Self.reportedCost(few))
        }
    }

    @Test func aSchemaDemandingAHugeArrayStopsAtMaxTokens() async throws {
        try await TestNode.with(credits: "0.001") { node in
            let body = """
                {"model": "openai/gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "list"}],
                 "response_format": {"type": "json_schema", "json_schema": {"name": "big", "schema":
                   {"type": "array", "minItems": 2000, "items": {"type": "string"}}}}}
                """
            let reply = try await node.request("/api/v1/chat/completions", body: body)
            #expect(reply.status == 200)
            #expect(reply.json?["choices"]?.arrayValue?.first?["finish_reason"] == "length")
            #expect(reply.json?["usage"]?["completion_tokens"] == 1)
            // The same upstream ignoring max_tokens: the router stops relaying at the bound.
            try await node.fault(#"{"provider": "openai", "kind": "overshoot"}"#)
            for stream in [false, true] {
                let body = """
                    {"model": "openai/gpt-4o-mini", "max_tokens": 5, "stream": \(stream), "messages": [{"role": "user", "content": "talk"}]}
                    """
                let overshot = try await node.request("/api/v1/chat/completions", body: body)
                #expect(overshot.status == 200)
                if stream {
                    let events = TestNode.events(overshot.body)
                    let content = events.filter { $0.contains(#""content""#) && !$0.contains(#""content":"""#) }
                    #expect(content.count <= 5)
                    #expect(events.contains { $0.contains(#""finish_reason":"length""#) })
                } else {
                    #expect(overshot.json?["choices"]?.arrayValue?.first?["finish_reason"] == "length")
                    let words =
                        overshot.json?["choices"]?.arrayValue?.first?["message"]?["content"]?.stringValue?.split(separator: " ").count ?? 99
                    #expect(words <= 5)
                }
            }
            let balance = try await node.settledBalance()
            #expect(balance.balance >= .zero)
            #expect(try await node.ledger.verify().isConsistent)
        }
    }

    @Test func creditAmountsAreBoundedAtTheLedgersMaximum() async throws {
        try await TestNode.with { node in
            let admin = try await node.makeAdminKey()
            func credit(_ amount: String, _ reference: String) async throws -> TestNode.Reply {
                try await node.request(
                    "/api/v1/admin/credits",
                    body: """
                        {"account": "\(node.account)", "amount": "\(amount)", "kind": "grant", "reference": "\(reference)"}
                        """, key: admin)
            }
            #expect(try await credit(Money.maximumAmount.decimalString, "max").status == 200)
            let onePast = try await credit((Money.maximumAmount + Money(nanos: 1)).decimalString, "max+1")
            #expect(onePast.status == 400 && onePast.body.contains("at most 1000000"))
            let int64 = try await credit("9223372036.854775807", "int64")
            #expect(int64.status == 400)
            #expect(try await credit("9223372036.854775808", "int64+1").status == 400)
            #expect(try await credit("0.0000000001", "tiny").status == 400)
            // The node still serves the account, and the ledger is whole.
            #expect(try await node.chat().status == 200)
            #expect(try await node.ledger.verify().isConsistent)
        }
    }
}
