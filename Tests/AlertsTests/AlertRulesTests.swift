import Alerts
import Foundation
import SignalboxCore
import Testing

/// The rules report each crossing and each transition once, and re-arm when the value recovers.
@Suite struct AlertRulesTests {
    func usd(_ text: String) -> Money { Money(decimal: text)! }

    @Test func aBalanceIsReportedWhenAChargeTakesItAcrossTheThresholdAndAgainAfterRecovering() {
        var rules = AlertRules(balanceBelow: usd("5"), spoolAge: 300)
        func change(_ account: String, _ balance: String, _ moves: [(Int64, String, Bool)]) -> AlertRules.AccountChange {
            .init(account: account, balance: usd(balance), movements: moves.map { .init(entry: $0.0, amount: usd($0.1), isCharge: $0.2) })
        }
        // Still above: nothing. Already below before these entries (a new elected node): nothing.
        #expect(rules.accounts([change("a", "6", [(1, "-1", true)])]).isEmpty)
        #expect(rules.accounts([change("b", "3", [(2, "-1", true)])]).isEmpty)
        // 6 → 4.5: crossed at entry 3.
        let crossed = rules.accounts([change("a", "4.5", [(3, "-1.5", true)])])
        #expect(crossed.map(\.kind) == [.balanceLow])
        #expect(crossed.first?.id == "account.balance_low:a:3" && crossed.first?.data["balance"] == "4.5")
        // Further spending, or a race that sees the crossing again: not reported twice.
        #expect(rules.accounts([change("a", "4", [(4, "-0.5", true)])]).isEmpty)
        #expect(rules.accounts([change("a", "3.9", [(5, "-0.1", true), (4, "-0.5", true)])]).isEmpty)
        // Topped up (a look sees it above), then below again: reported again.
        #expect(rules.accounts([change("a", "10", [(6, "6.1", false)])]).isEmpty)
        #expect(rules.accounts([change("a", "4.99", [(7, "-5.01", true)])]).map(\.id) == ["account.balance_low:a:7"])
        // Funded and spent below in one look: the charge crossed it (a grant does not count as a crossing).
        let fresh = rules.accounts([change("c", "4.9", [(8, "5.2", false), (9, "-0.3", true)])])
        #expect(fresh.map(\.id) == ["account.balance_low:c:9"])
        #expect(rules.accounts([change("d", "4.9", [(10, "4.9", false)])]).isEmpty)
    }

    @Test func aKeyIsReportedAt80And100PercentOncePerWindow() {
        var rules = AlertRules(balanceBelow: nil, spoolAge: 300)
        func change(_ spent: String, _ added: String, _ entry: Int64) -> AlertRules.KeyChange {
            .init(keyID: "k", account: "a", limit: usd("10"), spent: usd(spent), added: usd(added), lastEntry: entry)
        }
        #expect(rules.keys([change("7.99", "1", 1)]).isEmpty)
        #expect(rules.keys([change("8", "0.01", 2)]).map(\.kind) == [.keyLimit80])
        #expect(rules.keys([change("9", "1", 3)]).isEmpty)
        #expect(rules.keys([change("10", "1", 4)]).map(\.kind) == [.keyLimit100])
        #expect(rules.keys([change("11", "1", 5)]).isEmpty)
        // A new daily window starts from zero; one request then takes it past both marks.
        #expect(rules.keys([change("0.5", "0.5", 6)]).isEmpty)
        #expect(rules.keys([change("12", "11.5", 7)]).map(\.kind) == [.keyLimit80, .keyLimit100])
    }

    @Test func membersAreReportedWhenTheyDieOrLeaveNotWhileTheyStaySo() {
        var rules = AlertRules(balanceBelow: nil, spoolAge: 300)
        func view(_ states: [String: String]) -> [AlertRules.MemberView] {
            states.map { .init(id: $0.key, region: "eu", state: $0.value, incarnation: 7) }
        }
        // The first look learns: a member already dead then is not news.
        #expect(rules.members(view(["a": "alive", "b": "alive", "c": "dead"])).isEmpty)
        #expect(rules.members(view(["a": "alive", "b": "suspect", "c": "dead"])).isEmpty)
        let dead = rules.members(view(["a": "alive", "b": "dead", "c": "dead"]))
        #expect(dead.map(\.kind) == [.nodeDead] && dead.first?.id == "node.dead:b:7")
        #expect(rules.members(view(["a": "alive", "b": "dead", "c": "dead"])).isEmpty)
        #expect(rules.members(view(["a": "left", "b": "dead", "c": "dead"])).map(\.kind) == [.nodeLeft])
        // A member first seen dead (this node joined after it died) is not news either.
        #expect(rules.members(view(["a": "left", "b": "dead", "c": "dead", "d": "dead"])).isEmpty)
    }

    @Test func circuitsAreReportedOpeningAndClosing() {
        var rules = AlertRules(balanceBelow: nil, spoolAge: 300)
        #expect(rules.routedAround(["openai"]).isEmpty)
        #expect(rules.routedAround(["openai", "azure"]).map(\.kind) == [.circuitOpened])
        let changed = rules.routedAround(["azure"])
        #expect(changed.map(\.kind) == [.circuitClosed] && changed.first?.data["endpoint"] == "openai")
    }

    @Test func theLedgerIsReportedWhenItBecomesUnreachableAndTheSpoolWhenItGrowsOld() {
        var rules = AlertRules(balanceBelow: nil, spoolAge: 60)
        #expect(rules.ledger(reachable: true, oldestSpooled: nil, node: "n").isEmpty)
        #expect(rules.ledger(reachable: false, oldestSpooled: 5, node: "n").map(\.kind) == [.ledgerUnreachable])
        #expect(rules.ledger(reachable: false, oldestSpooled: 50, node: "n").isEmpty)
        #expect(rules.ledger(reachable: false, oldestSpooled: 61, node: "n").map(\.kind) == [.spoolAge])
        #expect(rules.ledger(reachable: false, oldestSpooled: 120, node: "n").isEmpty)
        #expect(rules.ledger(reachable: true, oldestSpooled: nil, node: "n").isEmpty)
        #expect(rules.ledger(reachable: false, oldestSpooled: nil, node: "n").map(\.kind) == [.ledgerUnreachable])
    }
}
