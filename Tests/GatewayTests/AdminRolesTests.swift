import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import NIOHTTP1
import SignalboxCore
import SignalboxTestKit
import Testing

/// Roles on the admin API: what each may change, and that every change (and only a change) is in
/// the audit trail with the key that made it.
@Suite struct AdminRolesTests {
    @Test func eachRoleChangesOnlyWhatItMayAndEveryChangeIsAudited() async throws {
        try await TestNode.with { node in
            let admin = try await node.makeAdminKey()
            let billing = try await node.makeAdminKey(role: .billing, id: "key-billing")
            let auditor = try await node.makeAdminKey(role: .auditor, id: "key-auditor")

            // The auditor reads everything and changes nothing.
            for path in [
                "/api/v1/admin/accounts", "/api/v1/admin/audit", "/api/v1/admin/ledger/entries", "/api/v1/keys", "/api/v1/admin/roles",
            ] {
                #expect(try await node.request(path, method: .GET, key: auditor).status == 200, "\(path)")
            }
            let refused = try await node.request("/api/v1/admin/accounts", body: #"{"name": "Nope"}"#, key: auditor)
            #expect(refused.status == 403 && refused.json?["error"]?["metadata"]?["reason"] == "role_forbids")
            #expect(try await node.request("/api/v1/admin/credits", body: #"{"account": "acct", "amount": 5}"#, key: auditor).status == 403)
            #expect(try await node.request("/api/v1/keys", body: #"{"name": "x"}"#, key: auditor).status == 403)

            // Billing manages accounts, keys and credit, but not operator keys, routing or roles.
            let created = try await node.request("/api/v1/admin/accounts", body: #"{"name": "Acme", "id": "acme"}"#, key: billing)
            #expect(created.status == 201)
            let bought = try await node.request(
                "/api/v1/admin/credits", body: #"{"account": "acme", "amount": "20", "reference": "po-1"}"#, key: billing)
            #expect(bought.json?["fee"] == "1.1" && bought.json?["balance"] == "20")
            #expect(try await node.request("/api/v1/keys", body: #"{"name": "ci", "account": "acme"}"#, key: billing).status == 201)
            #expect(try await node.request("/api/v1/keys", body: #"{"name": "op", "role": "admin"}"#, key: billing).status == 403)
            // Customer keys never spend the platform's or a provider's balance, nor the operator account's.
            for account in ["platform:fees", "provider:openai", "operator"] {
                let refused = try await node.request("/api/v1/keys", body: #"{"name": "x", "account": "\#(account)"}"#, key: billing)
                #expect(refused.status == 400 && refused.json?["error"]?["metadata"]?["param"] == "account", "\(account)")
            }
            #expect(try await node.request("/api/v1/admin/routing/eu", method: .PUT, body: #"{"allowed": []}"#, key: billing).status == 403)
            let role = #"{"claim": "group", "value": "ops", "role": "admin"}"#
            #expect(try await node.request("/api/v1/admin/roles", method: .PUT, body: role, key: billing).status == 403)

            // The operator key makes operator keys with a role and sets role mappings.
            let operatorKey = try await node.request("/api/v1/keys", body: #"{"name": "audit team", "role": "auditor"}"#, key: admin)
            #expect(operatorKey.status == 201 && operatorKey.json?["data"]?["role"] == "auditor")
            let secret = try #require(operatorKey.json?["key"]?.stringValue)
            #expect(try await node.request("/api/v1/admin/accounts", body: #"{"name": "Nope"}"#, key: secret).status == 403)
            #expect(try await node.request("/api/v1/admin/roles", method: .PUT, body: role, key: admin).status == 200)
            let badField = try await node.request("/api/v1/admin/credits", body: #"{"account": "acme", "amount": -1}"#, key: admin)
            #expect(badField.status == 400 && badField.json?["error"]?["metadata"]?["param"] == "amount")

            // Every change above, and nothing refused, with who made it.
            let trail = try #require(try await node.request("/api/v1/admin/audit", method: .GET, key: auditor).json?["data"]?.arrayValue)
            #expect(
                trail.compactMap { $0["action"]?.stringValue } == [
                    "role_mapping_changed", "key_created", "key_created", "credit_purchased", "account_created",
                ])
            let purchase = try #require(trail.first { $0["action"] == "credit_purchased" })
            #expect(purchase["actor"] == "key:key-billing" && purchase["role"] == "billing" && purchase["target"] == "acme")
            #expect(purchase["before"]?["balance"] == "0" && purchase["after"]?["balance"] == "20")
            #expect(purchase["source_address"]?.stringValue == "127.0.0.1")
            let byBilling = try await node.request("/api/v1/admin/audit?actor=key:key-billing&limit=2", method: .GET, key: admin)
            #expect(byBilling.json?["data"]?.arrayValue?.count == 2 && byBilling.json?["next_before"]?.intValue != nil)
            let csv = try await node.request("/api/v1/admin/audit?format=csv&action=account_created", method: .GET, key: admin)
            #expect(csv.body.hasPrefix("id,created_at,actor,role,action,target") && csv.body.contains("account_created,acme"))
            #expect(try await node.request("/api/v1/admin/audit?action=nope", method: .GET, key: admin).status == 400)
        }
    }

    @Test func reversalsAreMadeOverTheAPIOnceWithTheirReason() async throws {
        try await TestNode.with { node in
            let admin = try await node.makeAdminKey()
            let grant = try await node.request(
                "/api/v1/admin/credits", body: #"{"account": "\#(node.account)", "amount": 3, "kind": "grant"}"#, key: admin)
            #expect(grant.status == 200)
            let entries = try await node.request("/api/v1/admin/ledger/entries?kind=grant&limit=1", method: .GET, key: admin)
            let id = try #require(entries.json?["data"]?.arrayValue?.first?["id"]?.intValue)
            let before = try await node.ledger.balance(account: node.account).balance
            #expect(try await node.request("/api/v1/admin/ledger/entries/\(id)/reversal", body: "{}", key: admin).status == 400)
            let reversed = try await node.request(
                "/api/v1/admin/ledger/entries/\(id)/reversal", body: #"{"reason": "granted twice"}"#, key: admin)
            #expect(reversed.status == 200 && reversed.json?["already_recorded"] == false)
            let again = try await node.request(
                "/api/v1/admin/ledger/entries/\(id)/reversal", body: #"{"reason": "granted twice"}"#, key: admin)
            #expect(again.json?["already_recorded"] == true)
            #expect(try await node.ledger.balance(account: node.account).balance == before - Money(decimal: "3")!)
            let audit = try await node.request("/api/v1/admin/audit?action=entry_reversed", method: .GET, key: admin)
            #expect(
                audit.json?["data"]?.arrayValue?.count == 1
                    && audit.json?["data"]?.arrayValue?.first?["target"]?.stringValue == node.account)
        }
    }
}
