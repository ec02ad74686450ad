import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

/// What a node does while its ledger is unreachable: serve what its leases cover, spool the
/// charges, refuse what it cannot prove, and replay once the ledger is back.
@Suite struct LedgerOutageTests {
    @Test func aNodeServesFromItsLeaseSpoolsTheChargesAndRefusesWhatItCannotProve() async throws {
        try await TestNode.with(cuttable: true) { node in
            let ledger = try #require(node.ledger as? UnreachableLedger)
            let stranger = APIKeyFormat.generate()
            try await ledger.createAccount(id: "other", name: "Other")
            try await ledger.post([
                TransferRequest(
                    idempotencyKey: "grant-other", debit: Billing.SystemAccount.grants, credit: "other",
                    amount: Money(dollars: 10), kind: .grant)
            ])
            try await ledger.insertKey(
                KeyRecord(
                    id: "key-2", accountID: "other", hash: APIKeyFormat.hash(stranger),
                    label: APIKeyFormat.label(stranger), name: "other"))
            #expect(try await node.chat().status == 200)  // the node now holds a lease on the account
            #expect(try await node.request("/readyz", method: .GET).json?["status"] == "ready")

            ledger.isDown = true
            var served: [String] = []
            for stream in [false, true] {
                let reply = try await node.chat(stream: stream)
                #expect(reply.status == 200)
                served.append(try #require(reply.header("X-Generation-Id")))
            }
            let ready = try await node.request("/readyz", method: .GET)
            #expect(ready.status == 200)
            #expect(ready.json?["status"] == "degraded" && ready.json?["ledger"] == "unreachable")
            #expect(ready.json?["spooled_settlements"] == 2)
            // No lease and a key this node has never seen: it cannot prove anything.
            let refused = try await node.chat(key: stranger)
            #expect(refused.status == 503)
            #expect(refused.json?["error"]?["metadata"]?["reason"] == "ledger_unavailable")

            ledger.isDown = false
            var replayed = false
            for _ in 0..<60 where !replayed {
                try await Task.sleep(for: .milliseconds(100))
                replayed = try await node.request("/readyz", method: .GET).json?["spooled_settlements"] == 0
            }
            #expect(replayed)
            var cost = Money.zero
            for id in served { cost += try #require(try await node.generation(id)).cost }
            let charges = try await ledger.entries(EntryQuery(account: node.account, kind: .charge))
            #expect(charges.count == 3)
            #expect(Set(charges.compactMap(\.transfer.generationID)).isSuperset(of: served))
            let balance = try await node.settledBalance()
            #expect(balance.available == balance.balance)
            #expect(balance.balance == Money(dollars: 10) - charges.reduce(Money.zero) { $0 + $1.transfer.amount })
            #expect(try await ledger.verify().isConsistent)
        }
    }
}
