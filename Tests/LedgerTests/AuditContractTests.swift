import Foundation
@testable import Ledger
import PostgresNIO
import SignalboxCore
import SignalboxTestKit
import Testing

/// Administrative changes and their audit trail: the same contract for SQLite and PostgreSQL.
@Suite struct AuditContractTests {
    static let operatorActor = AuditActor(id: "key:key-operator", role: .admin, node: "node-a", sourceAddress: "10.0.0.7")
    static let billingActor = AuditActor(id: "oidc:https://idp.example#alice", role: .billing, node: "node-b")

    static func key(_ id: String, account: String, role: AdminRole? = nil) -> KeyRecord {
        KeyRecord(id: id, accountID: account, hash: "hash-\(id)", label: "sk-…\(id)", name: "key \(id)", adminRole: role)
    }

    static func purchase(_ account: String, _ amount: String, key: String) -> TransferRequest {
        TransferRequest(idempotencyKey: key, debit: Billing.SystemAccount.purchases, credit: account, amount: usd(amount), kind: .purchase)
    }

    @Test(arguments: StoreKind.allCases)
    func everyChangeIsRecordedWithItsActorAndBeforeAndAfter(kind: StoreKind) async throws {
        try await kind.with { store in
            let actor = Self.operatorActor
            let created = try await store.perform(.createAccount(id: "acct", name: "<b>Acme</b>", region: "eu"), by: actor)
            #expect(created.changed && created.account?.region == "eu")
            let pinned = try await store.perform(.pinAccount(id: "acct", region: "us"), by: Self.billingActor)
            #expect(pinned.changed && pinned.account?.region == "us")
            let key = try await store.perform(.createKey(Self.key("k1", account: "acct")), by: actor)
            #expect(key.changed && key.key?.id == "k1")
            let limited = try await store.perform(
                .updateKey(hash: "hash-k1", KeyUpdate(limit: .some(usd("5")), limitReset: "daily")), by: actor)
            #expect(limited.key?.limit == usd("5"))
            let revoked = try await store.perform(.updateKey(hash: "hash-k1", KeyUpdate(disabled: true)), by: actor)
            #expect(revoked.key?.disabled == true)
            let bought = try await store.perform(
                .post(.creditPurchased, account: "acct", [Self.purchase("acct", "10", key: "p1")]), by: actor)
            #expect(bought.recorded == 1)
            let mapping = try await store.perform(.setRoleMapping(.group, value: "finance", role: .billing), by: actor)
            #expect(mapping.changed)
            #expect(try await store.roleMappings() == [RoleMapping(claim: .group, value: "finance", role: .billing)])
            let deleted = try await store.perform(.deleteKey(hash: "hash-k1"), by: actor)
            #expect(deleted.changed)

            let trail = try await store.auditEntries(AuditQuery())
            #expect(
                trail.map(\.action) == [
                    .keyDeleted, .roleMappingChanged, .creditPurchased, .keyRevoked, .keyUpdated, .keyCreated, .accountPinned,
                    .accountCreated,
                ])
            #expect(trail.map(\.id) == trail.map(\.id).sorted(by: >), "newest first")
            let pin = try #require(trail.first { $0.action == .accountPinned })
            #expect(pin.actor == "oidc:https://idp.example#alice" && pin.role == .billing && pin.node == "node-b")
            #expect(pin.before?["region"] == "eu" && pin.after?["region"] == "us")
            let creation = try #require(trail.last)
            #expect(creation.target == "acct" && creation.before == nil && creation.after?["name"] == "<b>Acme</b>")
            #expect(creation.sourceAddress == "10.0.0.7")
            let purchase = try #require(trail.first { $0.action == .creditPurchased })
            #expect(purchase.before?["balance"] == "0" && purchase.after?["balance"] == "10")
            let revocation = try #require(trail.first { $0.action == .keyRevoked })
            #expect(
                revocation.target == "k1" && revocation.before?["disabled"] == .bool(false) && revocation.after?["disabled"] == .bool(true))
            #expect(trail.first?.after == nil && trail.first?.before?["id"] == "k1", "a deletion keeps what was deleted")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func changesThatChangeNothingAndChangesThatFailLeaveNoEntry(kind: StoreKind) async throws {
        try await kind.with { store in
            let actor = Self.operatorActor
            try await store.perform(.createAccount(id: "acct", name: "A", region: nil), by: actor)
            try await store.perform(.post(.creditPurchased, account: "acct", [Self.purchase("acct", "1", key: "p1")]), by: actor)
            let before = try await store.auditEntries(AuditQuery()).count
            // Replays and no-ops: nothing changed, nothing recorded.
            #expect(try await store.perform(.createAccount(id: "acct", name: "A", region: nil), by: actor).changed == false)
            #expect(
                try await store.perform(.post(.creditPurchased, account: "acct", [Self.purchase("acct", "1", key: "p1")]), by: actor)
                    .recorded == 0)
            #expect(try await store.perform(.pinAccount(id: "acct", region: nil), by: actor).changed == false)
            #expect(try await store.perform(.updateKey(hash: "nope", KeyUpdate(disabled: true)), by: actor).found == false)
            #expect(try await store.perform(.deleteKey(hash: "nope"), by: actor).found == false)
            #expect(try await store.perform(.pinAccount(id: "platform:fees", region: "eu"), by: actor).found == false)
            #expect(try await store.perform(.setRoleMapping(.group, value: "x", role: nil), by: actor).changed == false)
            // A reversal that would overdraw the customer is refused, and leaves no entry either.
            let overdraw = TransferRequest(
                idempotencyKey: "rev", debit: "acct", credit: Billing.SystemAccount.purchases, amount: usd("5"), kind: .reversal)
            await #expect(throws: (any Error).self) {
                try await store.perform(.post(.entryReversed, account: "acct", [overdraw]), by: actor)
            }
            await #expect(throws: (any Error).self) {
                try await store.perform(.post(.creditGranted, account: "ghost", [Self.purchase("ghost", "1", key: "g")]), by: actor)
            }
            #expect(try await store.auditEntries(AuditQuery()).count == before)
            #expect(try await store.balance(account: "acct").balance == usd("1"))
            #expect(try await store.verify().isConsistent)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theTrailFiltersAndPagesNewestFirst(kind: StoreKind) async throws {
        try await kind.with { store in
            let start = Date()
            for index in 0..<7 {
                try await store.appendAudit(
                    AuditEntry(
                        createdAt: start.addingTimeInterval(Double(index)), actor: index.isMultiple(of: 2) ? "key:a" : "key:b",
                        role: .admin, action: index < 3 ? .signIn : .signInFailed, target: "console", node: "n"))
            }
            #expect(try await store.auditEntries(AuditQuery(actor: "key:a")).count == 4)
            #expect(try await store.auditEntries(AuditQuery(action: .signIn)).count == 3)
            #expect(try await store.auditEntries(AuditQuery(since: start.addingTimeInterval(5))).count == 2)
            var seen: [Int64] = []
            var query = AuditQuery(limit: 3)
            while true {
                let page = try await store.auditEntries(query)
                seen += page.map(\.id)
                guard page.count == query.limit, let last = page.last else { break }
                query.before = last.id
            }
            #expect(seen.count == 7 && seen == seen.sorted(by: >))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func adminKeysKeepTheirRole(kind: StoreKind) async throws {
        try await kind.with { store in
            try await store.createAccount(id: "operators", name: "Operators")
            try await store.perform(.createKey(Self.key("aud", account: "operators", role: .auditor)), by: Self.operatorActor)
            try await store.insertKey(Self.key("bil", account: "operators", role: .billing))
            #expect(try await store.key(hash: "hash-aud")?.adminRole == .auditor)
            #expect(try await store.key(hash: "hash-bil")?.adminRole == .billing)
            #expect(try await store.key(hash: "hash-bil")?.isAdmin == true)
            try await store.insertKey(Self.key("plain", account: "operators"))
            #expect(try await store.key(hash: "hash-plain")?.adminRole == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func accountsAreListedWithTheirMoneyAndSearchedLiterally(kind: StoreKind) async throws {
        try await kind.with { store in
            for (id, name) in [("acct-1", "Acme 100% Corp"), ("acct-2", "Beta"), ("acct-3", "acme_labs"), ("acct-4", "Gamma")] {
                try await store.createAccount(id: id, name: name)
            }
            try await grant(store, "acct-2", "3")
            let all = try await store.accounts(AccountQuery(limit: 10))
            #expect(all.map(\.account.id) == ["acct-1", "acct-2", "acct-3", "acct-4"], "customers only, by id")
            #expect(all[1].balance == usd("3") && all[1].available == usd("3") && all[1].openLeases == 0)
            #expect(try await store.accounts(AccountQuery(search: "ACME")).map(\.account.id) == ["acct-1", "acct-3"])
            #expect(try await store.accounts(AccountQuery(search: "100%")).map(\.account.id) == ["acct-1"])
            #expect(try await store.accounts(AccountQuery(search: "_")).map(\.account.id) == ["acct-3"], "_ is a character, not a wildcard")
            let second = try await store.accounts(AccountQuery(after: "acct-2", limit: 1))
            #expect(second.map(\.account.id) == ["acct-3"])
        }
    }
}
