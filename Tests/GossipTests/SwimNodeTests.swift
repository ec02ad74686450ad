import Foundation
@testable import Gossip
import Testing

/// The state machine driven by hand: one event at a time, asserting the directives.
@Suite struct SwimNodeTests {
    let a = MemberAddress(host: "10.0.0.1", port: 7946)
    let b = MemberAddress(host: "10.0.0.2", port: 7946)
    let c = MemberAddress(host: "10.0.0.3", port: 7946)

    func node(_ id: String, _ address: MemberAddress, incarnation: UInt64 = 1) -> SwimNode {
        SwimNode(myself: Member(id: id, address: address, region: "eu", incarnation: incarnation), seed: 42)
    }

    func sends(_ directives: [SwimDirective]) -> [(GossipMessage, MemberAddress)] {
        directives.compactMap { if case .send(let message, let to) = $0 { (message, to) } else { nil } }
    }

    @Test func joiningExchangesFullStateWithTheSeed() {
        var seed = node("a", a)
        var joiner = node("b", b)
        _ = seed.join(seeds: [a], now: .zero)
        #expect(seed.joined)
        let hello = sends(joiner.join(seeds: [a], now: .zero))
        #expect(!joiner.joined && hello.count == 1 && hello[0].1 == a)
        let reply = sends(seed.receive(hello[0].0, from: b, now: .milliseconds(1)))
        #expect(seed.members["b"]?.status == .alive)
        _ = joiner.receive(reply[0].0, from: a, now: .milliseconds(2))
        #expect(joiner.joined && joiner.members["a"]?.status == .alive)
    }

    @Test func aSuspectedMemberRefutesWithAHigherIncarnation() {
        var b = node("b", self.b, incarnation: 7)
        _ = b.join(seeds: [], now: .zero)
        var accused = b.myself
        accused.status = .suspect
        let directives = b.receive(.gossip(from: "a", updates: [.member(accused, accuser: "a")]), from: a, now: .seconds(1))
        #expect(b.myself.incarnation == 8 && b.myself.status == .alive)
        #expect(directives.contains(.memberChanged(b.myself)))
        #expect(b.awareness == 1)  // having to refute means this node may be the slow one
        // the refutation beats the suspicion everywhere: alive(8) > suspect(7)
        var c = node("c", self.c)
        _ = c.receive(.gossip(from: "a", updates: [.member(accused, accuser: "a")]), from: a, now: .seconds(1))
        #expect(c.members["b"]?.status == .suspect)
        _ = c.receive(.gossip(from: "b", updates: [.member(b.myself, accuser: nil)]), from: self.b, now: .seconds(2))
        #expect(c.members["b"]?.status == .alive && c.members["b"]?.incarnation == 8)
        // an old alive does not undo a death; a restart (higher incarnation) does
        var dead = b.myself
        dead.status = .dead
        _ = c.receive(.gossip(from: "a", updates: [.member(dead, accuser: nil)]), from: a, now: .seconds(3))
        var stale = dead
        stale.status = .alive
        _ = c.receive(.gossip(from: "a", updates: [.member(stale, accuser: nil)]), from: a, now: .seconds(3))
        #expect(c.members["b"]?.status == .dead)
        stale.incarnation = 9_000
        _ = c.receive(.gossip(from: "b", updates: [.member(stale, accuser: nil)]), from: self.b, now: .seconds(4))
        #expect(c.members["b"]?.status == .alive)
    }

    @Test func suspicionTimeoutShrinksWithConfirmations() {
        var settings = SwimSettings()
        settings.probeInterval = .seconds(1)
        var cluster = ClusterSimulation(size: 10, settings: settings)
        _ = cluster.formCluster()
        let n = cluster.nodes[0]
        // n = 10: floor 4 × log10(10) × 1 s = 4 s, ceiling 24 s, K = 2
        #expect(n.suspicionTimeout(confirmations: 0) == .seconds(24))
        #expect(n.suspicionTimeout(confirmations: 2) == .seconds(4))
        let one = n.suspicionTimeout(confirmations: 1)
        #expect(one > .seconds(4) && one < .seconds(24))
        #expect(n.retransmitLimit == 8)  // 4 × ceil(log10(11))
    }

    @Test func aPingToASuspectCarriesTheSuspicionFirst() {
        var a = node("a", self.a)
        _ = a.join(seeds: [], now: .zero)
        let suspect = Member(id: "b", address: b, region: "eu", incarnation: 3, status: .suspect)
        _ = a.receive(.gossip(from: "c", updates: [.member(suspect, accuser: "c")]), from: c, now: .zero)
        var ping: GossipMessage?
        var now = Duration.zero
        while ping == nil && now < .seconds(5) {
            now += .milliseconds(50)
            ping = sends(a.tick(now: now)).first { if case .ping(_, _, "b", _) = $0.0 { true } else { false } }?.0
        }
        guard case .ping(_, _, _, let updates)? = ping else { Issue.record("no ping to the suspect"); return }
        #expect(updates.first == .member(suspect, accuser: "a") || updates.first == .member(suspect, accuser: "c"))
    }

    @Test func failedProbesRaiseLocalHealthOnlyWhenHelpersStaySilent() {
        func failProbe(nacking: Bool) -> Int {
            var a = node("a", self.a)
            _ = a.join(seeds: [], now: .zero)
            for (id, address) in [("b", b), ("c", c)] {
                _ = a.receive(.gossip(from: id, updates: [.member(Member(id: id, address: address, region: "eu", incarnation: 1), accuser: nil)]),
                              from: address, now: .zero)
            }
            var now = Duration.zero
            var probed: String?
            while now < .seconds(2) {
                now += .milliseconds(10)
                for (message, _) in sends(a.tick(now: now)) {
                    if case .ping(_, _, let target, _) = message, probed == nil { probed = target }
                    if case .pingRequest(let sequence, _, _, _) = message, nacking {
                        let helper = probed == "b" ? "c" : "b"
                        _ = a.receive(.nack(sequence: sequence, from: helper, updates: []), from: helper == "b" ? b : c, now: now)
                    }
                }
                if let probed, a.members[probed]?.status == .suspect { break }
            }
            return a.awareness
        }
        #expect(failProbe(nacking: true) == 0)   // the helper could not reach the target either
        #expect(failProbe(nacking: false) == 1)  // nobody answered: maybe it is us
    }
}

@Suite struct SyncSplittingTests {
    @Test func aLargeStateIsExchangedInDatagramsUnderTheUDPLimit() throws {
        let a = MemberAddress(host: "10.0.0.1", port: 7946), b = MemberAddress(host: "10.0.0.2", port: 7946)
        var big = SwimNode(myself: Member(id: "a", address: a, region: "eu", incarnation: 1), seed: 1)
        _ = big.join(seeds: [], now: .zero)
        // 120 nodes' worth of health reports with nested JSON values: ~250 KB in all.
        let report = String(repeating: #"{"openai/gpt-4o-mini|openai/default":{"degraded":false,"recent":{"successes":12}}}"#, count: 20)
        for index in 0..<120 { _ = big.publish(key: "health/node-\(index)", value: report, wallClockMillis: 1_000) }
        for index in 0..<200 {
            let member = Member(id: "m\(index)", address: MemberAddress(host: "10.1.0.\(index % 250)", port: 7946), region: "us",
                                incarnation: 5, apiURL: "http://10.1.0.\(index % 250):8080")
            _ = big.receive(.gossip(from: member.id, updates: [.member(member, accuser: nil)]), from: member.address, now: .zero)
        }
        let parts = big.syncMessages(isReply: false)
        #expect(parts.count > 4)
        let encoder = JSONEncoder()
        for part in parts { #expect(try encoder.encode(part).count < 60_000) }
        // only the first part asks for an answer
        #expect(parts.map { if case .sync(_, _, _, let isReply) = $0 { isReply } else { false } } == [false] + Array(repeating: true, count: parts.count - 1))
        var peer = SwimNode(myself: Member(id: "b", address: b, region: "eu", incarnation: 1), seed: 2)
        _ = peer.join(seeds: [], now: .zero)
        var answers = 0
        for part in parts.reversed() {  // any order
            answers += peer.receive(part, from: a, now: .zero).filter { if case .send = $0 { true } else { false } }.count
        }
        #expect(peer.state.count == 120 && peer.members.count == 201)
        #expect(answers == peer.syncMessages(isReply: true).count)  // one full answer, to the first part
    }
}
