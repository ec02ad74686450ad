import Foundation

/// Tuning of the failure detector and dissemination. The defaults suit nodes in one data
/// centre or region (sub-millisecond to few-millisecond round trips): a crashed node is declared
/// dead in about 3–4 s in a small cluster. Every duration is scaled by the local health
/// multiplier (Lifeguard) while this node itself seems slow.
public struct SwimSettings: Sendable, Hashable {
    /// One protocol period: a probe of one member.
    public var probeInterval: Duration = .milliseconds(500)
    /// Waiting for a direct ack before asking others to probe (indirect probe).
    public var probeTimeout: Duration = .milliseconds(200)
    /// Members asked to probe indirectly (k).
    public var indirectChecks = 3
    /// Suspicion timeout floor: `suspicionMultiplier × max(1, log10 n) × probeInterval`.
    public var suspicionMultiplier = 4
    /// Suspicion timeout ceiling as a multiple of the floor; confirmations shrink it toward the floor.
    public var suspicionMaxTimeoutMultiplier = 6
    /// An update is piggybacked `retransmitMultiplier × ceil(log10(n + 1))` times (λ·log n).
    public var retransmitMultiplier = 4
    /// Local health multiplier cap (Lifeguard awareness): timeouts stretch up to this factor.
    public var maxAwareness = 8
    /// Gossip rounds between probes, to `gossipFanout` random members.
    public var gossipInterval: Duration = .milliseconds(200)
    public var gossipFanout = 3
    /// Full state exchange with one random member (anti-entropy, heals partitions).
    public var pushPullInterval: Duration = .seconds(15)
    /// Dead members are still gossiped to this long, so a falsely accused node hears it and refutes.
    public var gossipToTheDead: Duration = .seconds(30)
    public var maxUpdatesPerMessage = 16
    /// How often a node that has not joined yet asks its seeds again.
    public var joinRetryInterval: Duration = .seconds(1)
    /// State keys with these prefixes expire this many milliseconds after they were written
    /// (versions are wall-clock milliseconds): windowed counters must not pile up forever.
    public var stateTTL: [String: UInt64] = ["rate/": 26 * 3600 * 1000]
    /// An urgent publication is also sent at once to this many live members (all, in small clusters).
    public var urgentFanout = 16
    /// Estimated encoded size at which a full state exchange is split into another datagram.
    public var maxSyncBytes = 32 * 1024

    public init() {}
}

/// What the shell must do after an event.
public enum SwimDirective: Sendable, Hashable {
    case send(GossipMessage, to: MemberAddress)
    /// A member joined or changed status (including this node being refuted or leaving).
    case memberChanged(Member)
    /// A replicated state entry changed (published here or learnt from others).
    case stateChanged(StateEntry)
}

/// SWIM with the Lifeguard refinements, as a pure state machine: events in (`tick`, `receive`,
/// `join`, `leave`, `publish`), directives out. Time (`now`, a monotonic duration since any fixed
/// point) and randomness (a seed) are injected, so a simulation can run hundreds of members
/// deterministically; the UDP shell (`GossipService`) does the I/O.
///
/// - Probing: one member per period, round-robin over a shuffled list; no ack within the probe
///   timeout → `pingRequest` to k others, who relay an ack or answer with a nack; no ack by the end
///   of the period → suspect.
/// - Suspicion: a suspect is declared dead after a timeout that starts at the ceiling and falls
///   logarithmically toward the floor as independent confirmations arrive; the member refutes by
///   raising its incarnation. Pings to a suspect carry the suspicion (buddy system).
/// - Local health: failed probes without nacks and having to refute raise a multiplier that
///   stretches this node's own timeouts; successful probes lower it.
/// - Dissemination: updates ride on every message, fewest-sent first, each up to λ·log n times;
///   between probes a gossip round sends them to a few members; a periodic full `sync` with one
///   member repairs whatever was missed.
public struct SwimNode: Sendable {
    public let settings: SwimSettings
    public private(set) var myself: Member
    /// Every other member ever heard of, including dead and left ones (tombstones).
    public private(set) var members: [String: Member] = [:]
    /// The replicated state, by key.
    public private(set) var state: [String: StateEntry] = [:]
    /// Lifeguard's local health multiplier: 0 when healthy.
    public private(set) var awareness = 0
    /// False until a seed answered (or there were no seeds).
    public private(set) var joined = false
    public private(set) var leaving = false

    private struct Probe: Sendable {
        var target: String
        var sequence: UInt32
        var sentAt: Duration
        var indirectSent = false
        var helpers = 0
        var nacks = 0
    }

    private struct Relay: Sendable {
        var origin: MemberAddress
        var originSequence: UInt32
        var deadline: Duration
    }

    private struct Suspicion: Sendable {
        var incarnation: UInt64
        var startedAt: Duration
        var accuser: String?
        var confirmations: Set<String> = []
    }

    private struct Broadcast: Sendable {
        var update: GossipUpdate
        var transmits: Int
        var order: UInt64
    }

    private var random: SplitMix64
    private var sequence: UInt32 = 0
    private var probe: Probe?
    private var nextProbeAt: Duration = .zero
    private var probeOrder: [String] = []
    private var probeIndex = 0
    private var relays: [UInt32: Relay] = [:]
    private var suspicions: [String: Suspicion] = [:]
    private var broadcasts: [String: Broadcast] = [:]
    private var broadcastOrder: UInt64 = 0
    private var goneAt: [String: Duration] = [:]
    private var nextGossipAt: Duration = .zero
    private var nextPushPullAt: Duration
    private var seeds: [MemberAddress] = []
    private var nextJoinAt: Duration = .zero
    private var lastVersion: UInt64 = 0

    /// `myself.incarnation` should be the node's boot time in milliseconds (see `MemberStatus`).
    public init(myself: Member, settings: SwimSettings = SwimSettings(), seed: UInt64) {
        self.myself = myself
        self.myself.status = .alive
        self.settings = settings
        self.random = SplitMix64(seed: seed)
        self.nextPushPullAt = settings.pushPullInterval
    }

    // MARK: Views

    /// Members that are not dead or left, this node included.
    public var liveCount: Int { 1 + members.values.filter { !$0.status.isGone }.count }

    /// Every member including this node, sorted by id.
    public var allMembers: [Member] { ([myself] + members.values).sorted { $0.id < $1.id } }

    /// How many times an update is sent before it leaves the queue (λ·log n).
    public var retransmitLimit: Int {
        settings.retransmitMultiplier * max(1, Int(log10(Double(liveCount + 1)).rounded(.up)))
    }

    // MARK: Events

    /// Starts joining through `seeds` (their addresses; this node's own is skipped). With no
    /// other seed this node starts a new cluster.
    public mutating func join(seeds: [MemberAddress], now: Duration) -> [SwimDirective] {
        self.seeds = seeds.filter { $0 != myself.address }
        nextProbeAt = now + settings.probeInterval
        nextGossipAt = now + settings.gossipInterval
        nextPushPullAt = now + settings.pushPullInterval
        guard !self.seeds.isEmpty else {
            joined = true
            return []
        }
        nextJoinAt = now + settings.joinRetryInterval
        return self.seeds.flatMap { seed in syncMessages(isReply: false).map { .send($0, to: seed) } }
    }

    /// Leaves the cluster gracefully: announces `left` to every live member directly (and in
    /// later gossip), so no one suspects this node. Stop calling `tick` afterwards.
    public mutating func leave(now: Duration) -> [SwimDirective] {
        leaving = true
        myself.incarnation += 1
        myself.status = .left
        enqueue(.member(myself, accuser: nil), key: "m:" + myself.id)
        var directives: [SwimDirective] = [.memberChanged(myself)]
        for member in liveMembers(excluding: []) {
            directives.append(.send(.gossip(from: myself.id, updates: [.member(myself, accuser: nil)]), to: member.address))
        }
        return directives
    }

    /// Writes a replicated state entry owned by (or set through) this node. `wallClockMillis`
    /// seeds the version so later writes from any node outrank earlier ones.
    ///
    /// `urgent` (counters that limit requests) also sends the entry straight to live members
    /// instead of waiting for the next gossip round, so other nodes see it within a round trip.
    public mutating func publish(key: String, value: String, wallClockMillis: UInt64, urgent: Bool = false) -> [SwimDirective] {
        let version = max(lastVersion + 1, wallClockMillis, (state[key]?.version ?? 0) + 1)
        lastVersion = version
        let entry = StateEntry(key: key, version: version, writer: myself.id, value: value)
        state[key] = entry
        enqueue(.state(entry), key: "s:" + key)
        var directives: [SwimDirective] = [.stateChanged(entry)]
        if urgent {
            for member in pick(from: liveMembers(excluding: []), count: settings.urgentFanout) {
                directives.append(.send(.gossip(from: myself.id, updates: [.state(entry)]), to: member.address))
            }
        }
        return directives
    }

    /// Whether an entry is past its prefix's lifetime (judged by the newest version seen, which
    /// tracks the writers' wall clocks).
    private func isExpired(_ entry: StateEntry) -> Bool {
        for (prefix, ttl) in settings.stateTTL where entry.key.hasPrefix(prefix) {
            return entry.version &+ ttl < lastVersion
        }
        return false
    }

    /// Loads state entries saved by an earlier run (they keep their versions, so newer news from
    /// the cluster still wins).
    public mutating func restore(_ entries: [StateEntry]) -> [SwimDirective] {
        apply(entries.map { .state($0) }, now: .zero)
    }

    /// Drives every timer: probes, indirect probes, suspicion timeouts, relays, gossip rounds,
    /// push-pull and join retries. Call it often (every ~10–50 ms) or at least by `nextDeadline`.
    public mutating func tick(now: Duration) -> [SwimDirective] {
        guard !leaving else { return [] }
        var directives: [SwimDirective] = []
        if !joined && now >= nextJoinAt {
            nextJoinAt = now + settings.joinRetryInterval
            directives += seeds.flatMap { seed in syncMessages(isReply: false).map { .send($0, to: seed) } }
        }
        directives += tickRelays(now: now)
        directives += tickProbe(now: now)
        directives += tickSuspicions(now: now)
        if now >= nextGossipAt {
            nextGossipAt = now + settings.gossipInterval
            directives += gossipRound(now: now)
        }
        if now >= nextPushPullAt {
            nextPushPullAt = now + settings.pushPullInterval
            for (key, entry) in state where isExpired(entry) {
                state[key] = nil
                broadcasts["s:" + key] = nil
            }
            if let partner = pick(from: liveMembers(excluding: []), count: 1).first {
                directives += syncMessages(isReply: false).map { .send($0, to: partner.address) }
            }
        }
        return directives
    }

    /// Handles a datagram from `address`.
    public mutating func receive(_ message: GossipMessage, from address: MemberAddress, now: Duration) -> [SwimDirective] {
        guard !leaving else { return [] }
        var directives: [SwimDirective] = []
        switch message {
        case .ping(let sequence, _, let target, let updates):
            directives += apply(updates, now: now)
            // A ping meant for an earlier node at this address is not ours to answer.
            if target == myself.id {
                directives.append(.send(.ack(sequence: sequence, from: myself.id, updates: takeUpdates(for: nil)), to: address))
            }
        case .pingRequest(let originSequence, _, let target, let updates):
            directives += apply(updates, now: now)
            let sequence = nextSequence()
            relays[sequence] = Relay(origin: address, originSequence: originSequence, deadline: now + scaled(settings.probeTimeout))
            directives.append(.send(.ping(sequence: sequence, from: myself.id, target: target.id,
                                          updates: takeUpdates(for: target.id)), to: target.address))
        case .ack(let sequence, let from, let updates):
            directives += apply(updates, now: now)
            if let relay = relays.removeValue(forKey: sequence) {
                directives.append(.send(.ack(sequence: relay.originSequence, from: from, updates: takeUpdates(for: nil)), to: relay.origin))
            } else if probe?.sequence == sequence {
                probe = nil
                awareness = max(0, awareness - 1)
            }
        case .nack(let sequence, _, let updates):
            directives += apply(updates, now: now)
            if probe?.sequence == sequence { probe?.nacks += 1 }
        case .gossip(_, let updates):
            directives += apply(updates, now: now)
        case .sync(let from, let remoteMembers, let remoteState, let isReply):
            directives += apply([.member(from, accuser: nil)] + remoteMembers.map { .member($0, accuser: nil) }
                                + remoteState.map { .state($0) }, now: now)
            joined = true
            if !isReply { directives += syncMessages(isReply: true).map { .send($0, to: address) } }
        }
        // Anything from a member we know means we are in the cluster.
        if !joined && members[message.sender] != nil { joined = true }
        return directives
    }

    // MARK: Probing

    private mutating func tickProbe(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        if var current = probe {
            if !current.indirectSent && now >= current.sentAt + scaled(settings.probeTimeout) {
                current.indirectSent = true
                if let target = members[current.target] {
                    let helpers = pick(from: liveMembers(excluding: [target.id]), count: settings.indirectChecks)
                    current.helpers = helpers.count
                    for helper in helpers {
                        directives.append(.send(.pingRequest(sequence: current.sequence, from: myself.id, target: target,
                                                             updates: takeUpdates(for: helper.id)), to: helper.address))
                    }
                }
                probe = current
            }
            if now >= current.sentAt + scaled(settings.probeInterval) {
                probe = nil
                // Lifeguard: helpers that did not even nack mean the trouble may be ours.
                let missing = current.helpers > 0 ? current.helpers - current.nacks : 1
                awareness = min(settings.maxAwareness - 1, awareness + max(0, missing))
                if let target = members[current.target], !target.status.isGone {
                    directives += suspect(target, accuser: myself.id, now: now)
                }
            }
        }
        guard probe == nil, now >= nextProbeAt else { return directives }
        nextProbeAt = now + scaled(settings.probeInterval)
        guard let target = nextProbeTarget() else { return directives }
        let sequence = nextSequence()
        probe = Probe(target: target.id, sequence: sequence, sentAt: now)
        directives.append(.send(.ping(sequence: sequence, from: myself.id, target: target.id, updates: takeUpdates(for: target.id)),
                                to: target.address))
        return directives
    }

    private mutating func nextProbeTarget() -> Member? {
        for _ in 0..<2 {
            while probeIndex < probeOrder.count {
                let id = probeOrder[probeIndex]
                probeIndex += 1
                if let member = members[id], !member.status.isGone { return member }
            }
            // A new round: every live member once, in a fresh random order.
            probeOrder = members.values.filter { !$0.status.isGone }.map(\.id).sorted()
            probeOrder.shuffle(using: &random)
            probeIndex = 0
            if probeOrder.isEmpty { return nil }
        }
        return nil
    }

    private mutating func tickRelays(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        for (sequence, relay) in relays.sorted(by: { $0.key < $1.key }) where now >= relay.deadline {
            relays[sequence] = nil
            directives.append(.send(.nack(sequence: relay.originSequence, from: myself.id, updates: takeUpdates(for: nil)),
                                    to: relay.origin))
        }
        return directives
    }

    // MARK: Suspicion

    private mutating func suspect(_ member: Member, accuser: String, now: Duration) -> [SwimDirective] {
        var suspected = member
        suspected.status = .suspect
        if member.status == .suspect, var suspicion = suspicions[member.id], suspicion.incarnation == member.incarnation {
            // Already suspected: this is one more independent confirmation.
            if accuser != suspicion.accuser && suspicion.confirmations.insert(accuser).inserted {
                suspicions[member.id] = suspicion
                enqueue(.member(suspected, accuser: accuser), key: "m:" + member.id)
            }
            return []
        }
        return apply([.member(suspected, accuser: accuser)], now: now)
    }

    /// Lifeguard: `max(min, max − (max − min) · log(C + 1) / log(K + 1))`.
    public func suspicionTimeout(confirmations: Int) -> Duration {
        let n = Double(liveCount)
        let floor = settings.probeInterval * (Double(settings.suspicionMultiplier) * max(1, log10(n)))
        let ceiling = floor * Double(settings.suspicionMaxTimeoutMultiplier)
        let wanted = liveCount - 2 >= settings.suspicionMultiplier - 2 ? settings.suspicionMultiplier - 2 : 0
        guard wanted >= 1 else { return floor }
        let fraction = log(Double(confirmations + 1)) / log(Double(wanted + 1))
        return max(floor, ceiling - (ceiling - floor) * min(1, fraction))
    }

    private mutating func tickSuspicions(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        for (id, suspicion) in suspicions.sorted(by: { $0.key < $1.key }) {
            guard now - suspicion.startedAt >= suspicionTimeout(confirmations: suspicion.confirmations.count),
                  var member = members[id], member.status == .suspect, member.incarnation == suspicion.incarnation
            else { continue }
            member.status = .dead
            directives += apply([.member(member, accuser: nil)], now: now)
        }
        return directives
    }

    // MARK: Applying news

    private mutating func apply(_ updates: [GossipUpdate], now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        for update in updates {
            switch update {
            case .member(let member, let accuser):
                directives += applyMember(member, accuser: accuser, now: now)
            case .state(let entry):
                if let current = state[entry.key], !entry.supersedes(current) { continue }
                if isExpired(entry) { continue }
                state[entry.key] = entry
                lastVersion = max(lastVersion, entry.version)
                enqueue(.state(entry), key: "s:" + entry.key)
                directives.append(.stateChanged(entry))
            }
        }
        return directives
    }

    private mutating func applyMember(_ member: Member, accuser: String?, now: Duration) -> [SwimDirective] {
        if member.id == myself.id {
            // News that I am suspect or dead: refute with a higher incarnation (unless leaving).
            guard member.status != .alive, member.incarnation >= myself.incarnation, !leaving else { return [] }
            myself.incarnation = max(myself.incarnation + 1, member.incarnation + 1)
            if member.status == .suspect { awareness = min(settings.maxAwareness - 1, awareness + 1) }
            enqueue(.member(myself, accuser: nil), key: "m:" + myself.id)
            return [.memberChanged(myself)]
        }
        if let current = members[member.id] {
            guard member.supersedes(current) else {
                // Same suspicion from someone else: a confirmation.
                if member.status == .suspect, current.status == .suspect, member.incarnation == current.incarnation,
                   let accuser, var suspicion = suspicions[member.id], accuser != suspicion.accuser,
                   suspicion.confirmations.insert(accuser).inserted {
                    suspicions[member.id] = suspicion
                    enqueue(.member(member, accuser: accuser), key: "m:" + member.id)
                }
                return []
            }
        }
        let isNew = members[member.id] == nil
        members[member.id] = member
        switch member.status {
        case .suspect:
            suspicions[member.id] = Suspicion(incarnation: member.incarnation, startedAt: now, accuser: accuser)
        case .alive:
            suspicions[member.id] = nil
            goneAt[member.id] = nil
            if isNew, probeOrder.count >= probeIndex {
                // New members join the current round at a random place.
                let position = Int.random(in: probeIndex...probeOrder.count, using: &random)
                probeOrder.insert(member.id, at: position)
            }
        case .dead, .left:
            suspicions[member.id] = nil
            goneAt[member.id] = now
        }
        enqueue(.member(member, accuser: accuser), key: "m:" + member.id)
        return [.memberChanged(member)]
    }

    // MARK: Dissemination

    private mutating func enqueue(_ update: GossipUpdate, key: String) {
        broadcastOrder += 1
        broadcasts[key] = Broadcast(update: update, transmits: 0, order: broadcastOrder)
    }

    /// Updates for one outgoing message: fewest-sent first, newest first among equals. A ping to a
    /// suspect starts with its suspicion (buddy system), so it can refute at once.
    private mutating func takeUpdates(for recipient: String?) -> [GossipUpdate] {
        guard !broadcasts.isEmpty else { return [] }
        var chosen: [String] = []
        if let recipient, let member = members[recipient], member.status == .suspect, broadcasts["m:" + recipient] == nil {
            broadcastOrder += 1
            broadcasts["m:" + recipient] = Broadcast(update: .member(member, accuser: myself.id), transmits: 0, order: broadcastOrder)
        }
        if let recipient, broadcasts["m:" + recipient] != nil { chosen.append("m:" + recipient) }
        let rest = broadcasts.filter { $0.key != chosen.first }
            .sorted { ($0.value.transmits, -Int64($0.value.order)) < ($1.value.transmits, -Int64($1.value.order)) }
            .prefix(settings.maxUpdatesPerMessage - chosen.count).map(\.key)
        chosen += rest
        let limit = retransmitLimit
        var updates: [GossipUpdate] = []
        for key in chosen {
            guard var broadcast = broadcasts[key] else { continue }
            updates.append(broadcast.update)
            broadcast.transmits += 1
            broadcasts[key] = broadcast.transmits >= limit ? nil : broadcast
        }
        return updates
    }

    private mutating func gossipRound(now: Duration) -> [SwimDirective] {
        guard !broadcasts.isEmpty else { return [] }
        // Recently dead members too: a node wrongly declared dead learns it and refutes.
        let recentlyGone = members.values.filter { member in
            member.status == .dead && (goneAt[member.id].map { now - $0 < settings.gossipToTheDead } ?? false)
        }
        let targets = pick(from: liveMembers(excluding: []) + recentlyGone.sorted { $0.id < $1.id }, count: settings.gossipFanout)
        var directives: [SwimDirective] = []
        for target in targets {
            let updates = takeUpdates(for: target.id)
            if updates.isEmpty { break }
            directives.append(.send(.gossip(from: myself.id, updates: updates), to: target.address))
        }
        return directives
    }

    /// The full state, split so that each datagram stays well under UDP's 64 KB: members and
    /// state entries are packed until an estimate of their encoded size reaches
    /// `settings.maxSyncBytes`. Only the first part of a request asks for an answer; merging is
    /// idempotent, so parts may arrive in any order or twice.
    func syncMessages(isReply: Bool) -> [GossipMessage] {
        var messages: [GossipMessage] = []
        var members: [Member] = []
        var entries: [StateEntry] = []
        var size = 0
        func flush() {
            messages.append(.sync(from: myself, members: members, state: entries, isReply: isReply || !messages.isEmpty))
            (members, entries, size) = ([], [], 0)
        }
        for member in self.members.values.sorted(by: { $0.id < $1.id }) {
            let estimate = 160 + member.id.utf8.count + member.address.host.utf8.count + member.region.utf8.count + (member.apiURL?.utf8.count ?? 0)
            if size + estimate > settings.maxSyncBytes && (!members.isEmpty || !entries.isEmpty) { flush() }
            members.append(member)
            size += estimate
        }
        for entry in state.values.sorted(by: { $0.key < $1.key }) {
            // JSON escaping can double a value's size (quotes in nested JSON).
            let estimate = 80 + entry.key.utf8.count + entry.writer.utf8.count + 2 * entry.value.utf8.count
            if size + estimate > settings.maxSyncBytes && (!members.isEmpty || !entries.isEmpty) { flush() }
            entries.append(entry)
            size += estimate
        }
        if !members.isEmpty || !entries.isEmpty || messages.isEmpty { flush() }
        return messages
    }

    // MARK: Helpers

    private func liveMembers(excluding excluded: Set<String>) -> [Member] {
        members.values.filter { !$0.status.isGone && !excluded.contains($0.id) }.sorted { $0.id < $1.id }
    }

    private mutating func pick(from candidates: [Member], count: Int) -> [Member] {
        var pool = candidates
        pool.shuffle(using: &random)
        return Array(pool.prefix(count))
    }

    private mutating func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    private func scaled(_ duration: Duration) -> Duration { duration * (awareness + 1) }
}

/// A small, fast, seedable generator (SplitMix64), so simulations repeat exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
