import Foundation
@testable import Gossip
import GossipSimulation
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

    func exchanges(_ directives: [SwimDirective]) -> [(GossipMessage, MemberAddress)] {
        directives.compactMap { if case .exchange(let message, let with) = $0 { (message, with) } else { nil } }
    }

    @Test func joiningExchangesFullStateWithTheSeedOverTCP() {
        var seed = node("a", a)
        var joiner = node("b", b)
        _ = seed.join(seeds: [a], now: .zero)
        #expect(seed.joined)
        let hello = joiner.join(seeds: [a], now: .zero)
        #expect(sends(hello).isEmpty)  // nothing large goes by datagram
        let request = exchanges(hello)
        #expect(!joiner.joined && request.count == 1 && request[0].1 == a)
        let (reply, _) = seed.answer(request[0].0, now: .milliseconds(1))
        #expect(seed.members["b"]?.status == .alive)
        guard let reply else {
            Issue.record("no answer")
            return
        }
        _ = joiner.receive(reply, from: a, now: .milliseconds(2))
        #expect(joiner.joined && joiner.members["a"]?.status == .alive)
        // A state exchange that arrives as a datagram gets nothing back (no amplification).
        var other = node("c", c)
        _ = other.join(seeds: [], now: .zero)
        #expect(other.receive(request[0].0, from: b, now: .seconds(1)).allSatisfy { if case .send = $0 { false } else { true } })
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
        // refuting a death raises it too (Lifeguard)
        var declared = b.myself
        declared.status = .dead
        _ = b.receive(.gossip(from: "a", updates: [.member(declared, accuser: nil)]), from: a, now: .seconds(1))
        #expect(b.myself.incarnation == 9 && b.myself.status == .alive && b.awareness == 2)
        // the refutation beats the suspicion everywhere: alive(8) > suspect(7)
        var c = node("c", self.c)
        var known = accused
        known.status = .alive
        _ = c.receive(.gossip(from: "b", updates: [.member(known, accuser: nil)]), from: self.b, now: .seconds(1))
        _ = c.receive(.gossip(from: "a", updates: [.member(accused, accuser: "a")]), from: a, now: .seconds(1))
        #expect(c.members["b"]?.status == .suspect)
        _ = c.receive(.gossip(from: "b", updates: [.member(b.myself, accuser: nil)]), from: self.b, now: .seconds(2))
        #expect(c.members["b"]?.incarnation == 9)
        #expect(c.members["b"]?.status == .alive && c.members["b"]?.incarnation == 9)
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

    @Test func suspicionTimeoutShrinksWithConfirmations() throws {
        var settings = SwimSettings()
        settings.probeInterval = .seconds(1)
        settings.suspicionMultiplier = 4
        settings.suspicionConfirmations = 2
        var cluster = ClusterSimulation(size: 10, settings: settings)
        let formation = cluster.formCluster()
        try #require(formation != nil, "the cluster never formed")
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
        _ = a.receive(
            .gossip(from: "b", updates: [.member(Member(id: "b", address: b, region: "eu", incarnation: 3), accuser: nil)]),
            from: b, now: .zero)
        _ = a.receive(.gossip(from: "c", updates: [.member(suspect, accuser: "c")]), from: c, now: .zero)
        var ping: GossipMessage?
        var now = Duration.zero
        while ping == nil && now < .seconds(5) {
            now += .milliseconds(50)
            ping = sends(a.tick(now: now)).first { if case .ping(_, _, "b", _) = $0.0 { true } else { false } }?.0
        }
        guard case .ping(_, _, _, let updates)? = ping else {
            Issue.record("no ping to the suspect")
            return
        }
        #expect(updates.first == .member(suspect, accuser: "a"))
        // The buddy suspicion is meant for the suspect alone: what others are told is c's suspicion only.
        for step in 1...40 {
            for (message, to) in sends(a.tick(now: now + .milliseconds(50 * step))) where to != b {
                if case .gossip(_, let told) = message { #expect(!told.contains(.member(suspect, accuser: "a"))) }
            }
        }
    }

    @Test func failedProbesRaiseLocalHealthOnlyWhenHelpersStaySilent() {
        func failProbe(nacking: Bool) -> Int {
            var a = node("a", self.a)
            _ = a.join(seeds: [], now: .zero)
            for (id, address) in [("b", b), ("c", c)] {
                _ = a.receive(
                    .gossip(from: id, updates: [.member(Member(id: id, address: address, region: "eu", incarnation: 1), accuser: nil)]),
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
        #expect(failProbe(nacking: true) == 0)  // the helper could not reach the target either
        #expect(failProbe(nacking: false) == 1)  // nobody answered: maybe it is us
    }
}

@Suite struct DisseminationTests {
    let a = MemberAddress(host: "10.0.0.1", port: 7946), b = MemberAddress(host: "10.0.0.2", port: 7946)

    func started(_ id: String, _ address: MemberAddress, settings: SwimSettings = SwimSettings()) -> SwimNode {
        var node = SwimNode(myself: Member(id: id, address: address, region: "eu", incarnation: 1), settings: settings, seed: 7)
        _ = node.join(seeds: [], now: .zero)
        return node
    }

    func datagrams(_ directives: [SwimDirective]) -> [GossipMessage] {
        directives.compactMap { if case .send(let message, _) = $0 { message } else { nil } }
    }

    func frameSize(_ message: GossipMessage, sender: String) -> Int {
        WireCodec.size(of: message) + WireCodec.headerSize(sender: sender) + ClusterKeyring.sealOverhead
    }

    @Test func datagramsArePackedToTheByteWithMembershipFirst() {
        var node = started("a", a)
        for index in 0..<60 {
            let member = Member(
                id: "member-with-a-long-name-\(index)", address: MemberAddress(host: "10.1.0.\(index)", port: 7946),
                region: "eu-central", incarnation: 5, apiURL: "http://10.1.0.\(index):8080")
            _ = node.receive(.gossip(from: member.id, updates: [.member(member, accuser: nil)]), from: member.address, now: .zero)
        }
        _ = node.publish(key: "routing/eu", value: String(repeating: "x", count: 300), wallClockMillis: 1, now: .zero)
        var now = Duration.zero
        var sizes: [Int] = []
        var sawStateBeforeMembersDrained = false
        while now < .seconds(3) {
            now += .milliseconds(20)
            for message in datagrams(node.tick(now: now)) {
                sizes.append(frameSize(message, sender: "a"))
                if case .gossip(_, let updates) = message,
                    let firstState = updates.firstIndex(where: { if case .state = $0 { true } else { false } })
                {
                    if updates[firstState...].contains(where: { if case .member = $0 { true } else { false } }) {
                        sawStateBeforeMembersDrained = true
                    }
                }
            }
        }
        #expect(!sizes.isEmpty && sizes.max()! <= 1400)
        #expect(sizes.max()! > 1200)  // full datagrams while there is news to send
        #expect(!sawStateBeforeMembersDrained)
    }

    @Test func aLargeEntryTravelsAsANoticeAndIsFetchedOverTCP() throws {
        var writer = started("a", a)
        var reader = started("b", b)
        _ = writer.receive(.gossip(from: "b", updates: [.member(reader.myself, accuser: nil)]), from: b, now: .zero)
        _ = reader.receive(.gossip(from: "a", updates: [.member(writer.myself, accuser: nil)]), from: a, now: .zero)
        // A node that has served every endpoint of the catalog: ~10 KB of report.
        let report = (0..<155).map { "vendor/model-\($0)|provider-\($0 % 12)/default 0 12,1,0,5400,12,480000,12 -" }.joined(separator: "\n")
        let published = writer.publish(key: "health/a", value: report, wallClockMillis: 5, now: .seconds(1), urgent: true)
        let urgent = datagrams(published)
        #expect(urgent.count == 1)
        guard case .gossip(_, let updates) = urgent[0], case .notice(let notice) = updates[0] else {
            Issue.record("no notice")
            return
        }
        #expect(frameSize(urgent[0], sender: "a") < 200 && notice.key == "health/a")
        let asked = reader.receive(urgent[0], from: a, now: .seconds(1))
        let fetch = asked.compactMap { if case .exchange(let message, let with) = $0 { (message, with) } else { nil } }
        #expect(fetch.count == 1 && fetch[0].1 == a)
        let (answer, _) = writer.answer(fetch[0].0, now: .seconds(1) + .milliseconds(2))
        _ = reader.receive(try #require(answer), from: a, now: .seconds(1) + .milliseconds(3))
        #expect(reader.state["health/a"]?.value == report)
        // Republished unchanged: a notice with the same digest refreshes it without a fetch.
        let again = datagrams(writer.publish(key: "health/a", value: report, wallClockMillis: 6, now: .seconds(11), urgent: true))
        let refreshed = reader.receive(again[0], from: a, now: .seconds(11))
        #expect(!refreshed.contains { if case .exchange = $0 { true } else { false } })
        #expect(reader.state["health/a"]?.version == writer.state["health/a"]?.version)
        #expect(reader.ageMillis(of: "health/a", now: .seconds(12)) == 1000)
        // Not refreshed for its lifetime (30 s for health): gone.
        let later = reader.tick(now: .seconds(45))
        #expect(reader.state["health/a"] == nil && later.contains(.stateRemoved(key: "health/a")))
    }

    @Test func agesTravelWithEntriesSoNoWallClockDecidesFreshness() {
        var reader = started("b", b)
        let writer = Member(id: "a", address: a, region: "eu", incarnation: 1)
        _ = reader.receive(.gossip(from: "a", updates: [.member(writer, accuser: nil)]), from: a, now: .zero)
        // A version stamped ten minutes in the future does not make an old report young.
        let entry = StateEntry(key: "health/a", version: UInt64.max / 2, writer: "a", value: "h1")
        _ = reader.receive(.gossip(from: "a", updates: [.state(entry, ageMillis: 29_000)]), from: a, now: .seconds(1))
        #expect(reader.state["health/a"] != nil)
        _ = reader.tick(now: .seconds(3))
        #expect(reader.state["health/a"] == nil)
        // And one already past its lifetime is not taken at all.
        let old = StateEntry(key: "health/a", version: UInt64.max / 2 + 1, writer: "a", value: "h1")
        _ = reader.receive(.gossip(from: "a", updates: [.state(old, ageMillis: 31_000)]), from: a, now: .seconds(4))
        #expect(reader.state["health/a"] == nil)
    }

    @Test func aSecondProcessWithALiveNodesIdIsRefusedOnBothSides() throws {
        var seed = started("a", a)
        var first = SwimNode(myself: Member(id: "b", address: b, region: "eu", incarnation: 1), seed: 3)
        let join = first.join(seeds: [a], now: .zero)
        guard case .exchange(let hello, _) = join[0] else {
            Issue.record("no join")
            return
        }
        _ = first.receive(try #require(seed.answer(hello, now: .zero).reply), from: a, now: .zero)
        #expect(first.joined)
        let impostorAddress = MemberAddress(host: "10.0.0.9", port: 7946)
        var impostor = SwimNode(myself: Member(id: "b", address: impostorAddress, region: "eu", incarnation: 99), seed: 4)
        guard case .exchange(let claim, _) = impostor.join(seeds: [a], now: .zero)[0] else { return }
        let (reply, seedSide) = seed.answer(claim, now: .seconds(1))
        #expect(seedSide.contains { if case .conflict = $0 { true } else { false } })
        #expect(seed.members["b"]?.address == b)
        let impostorSide = impostor.receive(try #require(reply), from: a, now: .seconds(1))
        #expect(impostorSide.contains { if case .conflict = $0 { true } else { false } })
        #expect(!impostor.joined && impostor.conflict?.address == b)
    }

    @Test func aLeavingMemberThatStopsAnsweringIsLeftNeverSuspected() {
        var node = started("a", a)
        var leaving = Member(id: "b", address: b, region: "eu", incarnation: 2, status: .leaving)
        _ = node.receive(.gossip(from: "b", updates: [.member(leaving, accuser: nil)]), from: b, now: .zero)
        var now = Duration.zero
        while now < .seconds(3) && node.members["b"]?.status == .leaving {
            now += .milliseconds(10)
            _ = node.tick(now: now)
        }
        #expect(node.members["b"]?.status == .left)
        // A suspicion from someone who had not heard of the drain ends the same way.
        var other = started("c", MemberAddress(host: "10.0.0.3", port: 7946))
        _ = other.receive(.gossip(from: "b", updates: [.member(leaving, accuser: nil)]), from: b, now: .zero)
        leaving.status = .suspect
        _ = other.receive(.gossip(from: "d", updates: [.member(leaving, accuser: "d")]), from: b, now: .zero)
        #expect(other.members["b"]?.status == .left)
    }

    @Test func deadMembersAndSeedsAreRecontactedThenReapedWithTheirState() {
        var settings = SwimSettings()
        settings.reapDeadAfter = .seconds(60)
        var node = SwimNode(myself: Member(id: "a", address: a, region: "eu", incarnation: 1), settings: settings, seed: 9)
        _ = node.join(seeds: [], now: .zero)
        let dead = Member(id: "b", address: b, region: "eu", incarnation: 3, status: .dead)
        // News of an unknown member's death is stale: it is not taken.
        _ = node.receive(.gossip(from: "c", updates: [.member(dead, accuser: nil)]), from: b, now: .zero)
        #expect(node.members["b"] == nil)
        _ = node.receive(
            .gossip(from: "b", updates: [.member(Member(id: "b", address: b, region: "eu", incarnation: 3), accuser: nil)]),
            from: b, now: .zero)
        _ = node.receive(.gossip(from: "c", updates: [.member(dead, accuser: nil)]), from: b, now: .zero)
        _ = node.receive(
            .gossip(from: "c", updates: [.state(StateEntry(key: "rate/b/acct", version: 1, writer: "b", value: "1:1:1:1"), ageMillis: 0)]),
            from: b, now: .zero)
        #expect(node.state["rate/b/acct"] != nil)
        var contacted = 0
        var removed: [String] = []
        var now = Duration.zero
        while now < .seconds(70) {
            now += .milliseconds(50)
            for directive in node.tick(now: now) {
                if case .exchange(.sync, let to) = directive, to == b { contacted += 1 }
                if case .stateRemoved(let key) = directive { removed.append(key) }
            }
        }
        #expect(contacted >= 15)  // every 3 s while it is dead
        #expect(node.members["b"] == nil && removed == ["rate/b/acct"])
        // a peer that has not reaped yet cannot bring its state back
        _ = node.receive(
            .gossip(from: "c", updates: [.state(StateEntry(key: "rate/b/acct", version: 2, writer: "b", value: "1:1:1:1"), ageMillis: 0)]),
            from: b, now: now)
        _ = node.receive(.gossip(from: "c", updates: [.member(dead, accuser: nil)]), from: b, now: now)
        #expect(node.state["rate/b/acct"] == nil && node.members["b"] == nil)
    }
}

@Suite struct ReplayGuardTests {
    @Test func repeatsOldFramesAndEarlierLivesAreDropped() {
        var guardian = ReplayGuard(windowMillis: 30_000)
        let wall: UInt64 = 1_800_000_000_000
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 1, sentAtMillis: wall, receivedAtMillis: wall + 1) == .accept)
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 1, sentAtMillis: wall, receivedAtMillis: wall + 2) == .replayed)
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 3, sentAtMillis: wall + 10, receivedAtMillis: wall + 11) == .accept)
        // Reordered: an older sequence not seen yet is accepted.
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 2, sentAtMillis: wall + 5, receivedAtMillis: wall + 12) == .accept)
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 2, sentAtMillis: wall + 5, receivedAtMillis: wall + 13) == .replayed)
        #expect(guardian.check(sender: "a", epoch: 4, sequence: 900, sentAtMillis: wall, receivedAtMillis: wall + 14) == .stale)
        // A frame withheld for a minute and delivered later is stale by the sender's own clock.
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 4, sentAtMillis: wall + 20, receivedAtMillis: wall + 60_020) == .stale)
        // Far below the newest sequence (beyond the bitmap): replayed.
        #expect(
            guardian.check(sender: "a", epoch: 5, sequence: 5_000, sentAtMillis: wall + 61_000, receivedAtMillis: wall + 61_001) == .accept)
        #expect(guardian.check(sender: "a", epoch: 5, sequence: 4, sentAtMillis: wall + 20, receivedAtMillis: wall + 61_002) == .replayed)
    }

    @Test func aSenderTenMinutesAheadIsNotCutOff() {
        var guardian = ReplayGuard(windowMillis: 30_000)
        let wall: UInt64 = 1_800_000_000_000, ahead: UInt64 = 600_000
        for sequence in 1...100 as ClosedRange<UInt64> {
            let sent = wall + ahead + sequence * 100
            #expect(
                guardian.check(sender: "fast", epoch: 1, sequence: sequence, sentAtMillis: sent, receivedAtMillis: sent - ahead + 1)
                    == .accept)
        }
        #expect(guardian.clockOffset(of: "fast") == -599_999)
        // Its clock steps back by an hour (NTP fixed it): three frames later it is heard again.
        let stepped = wall + 20_000
        let verdicts = (101...104 as ClosedRange<UInt64>).map {
            guardian.check(sender: "fast", epoch: 1, sequence: $0, sentAtMillis: stepped + $0, receivedAtMillis: stepped + $0 + 1)
        }
        #expect(verdicts == [.stale, .stale, .accept, .accept])
    }
}

@Suite struct WireCodecTests {
    @Test func everyMessageRoundTrips() throws {
        let member = Member(
            id: "eu-1", address: MemberAddress(host: "10.0.0.1", port: 7946), region: "eu", incarnation: 1_800_000_000_000,
            status: .leaving, apiURL: "https://10.0.0.1:8443")
        let entry = StateEntry(key: "routing/eu", version: 42, writer: "eu-1", value: #"{"allowed":["azure"]} ünïcödé"#)
        let notice = StateNotice(key: "health/eu-1", version: 9, writer: "eu-1", digest: entry.digest, ageMillis: 1234)
        let updates: [GossipUpdate] = [
            .member(member, accuser: "eu-2"), .member(member, accuser: nil), .state(entry, ageMillis: 77), .notice(notice),
        ]
        let messages: [GossipMessage] = [
            .ping(sequence: 7, from: "a", target: "b", updates: updates), .pingRequest(sequence: 8, from: "a", target: member, updates: []),
            .ack(sequence: UInt32.max, from: "b", updates: updates), .nack(sequence: 0, from: "c", updates: []),
            .gossip(from: "a", updates: updates), .sync(from: member, members: [member, member], state: updates, isReply: true),
            .fetch(from: "a", keys: ["health/eu-1", "routing/eu"]), .entries(from: "b", updates: [.state(entry, ageMillis: 0)]),
        ]
        for message in messages {
            let frame = GossipFrame(
                sender: "eu-1", epoch: 1_800_000_000_000, sequence: UInt64.max, sentAtMillis: 1_800_000_000_123, message: message)
            let bytes = WireCodec.encode(frame)
            #expect(try WireCodec.decode(bytes) == frame)
            #expect(bytes.count <= WireCodec.size(of: message) + WireCodec.headerSize(sender: "eu-1"))
            // Every truncation fails cleanly.
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 40)) {
                #expect(throws: WireError.self) { try WireCodec.decode(Array(bytes.prefix(cut))) }
            }
        }
        // A length that claims more than the frame holds is refused before anything is allocated.
        #expect(throws: WireError.self) { try WireCodec.decode([2, 0xff, 0xff, 0xff, 0xff, 0x0f]) }
    }
}
