import Foundation

/// Tuning of the failure detector and dissemination. The defaults suit nodes in one data
/// centre or region (sub-millisecond to few-millisecond round trips). Every duration of the
/// failure detector is scaled by the local health multiplier (Lifeguard) while this node itself
/// seems slow.
public struct SwimSettings: Sendable, Hashable {
    /// One protocol period: a probe of one member.
    public var probeInterval: Duration = .milliseconds(300)
    /// Waiting for a direct ack before asking others to probe (indirect probe).
    public var probeTimeout: Duration = .milliseconds(100)
    /// Members asked to probe indirectly (k).
    public var indirectChecks = 3
    /// Suspicion timeout floor: `suspicionMultiplier × max(1, log10 n) × probeInterval`.
    public var suspicionMultiplier = 3
    /// Lifeguard's K: independent confirmations of a suspicion that shrink its timeout to the floor.
    public var suspicionConfirmations = 2
    /// Suspicion timeout ceiling as a multiple of the floor; confirmations shrink it toward the floor.
    public var suspicionMaxTimeoutMultiplier = 6
    /// An update is piggybacked `retransmitMultiplier × ceil(log10(n + 1))` times (λ·log n).
    public var retransmitMultiplier = 4
    /// Local health multiplier cap (Lifeguard awareness): timeouts stretch up to this factor.
    public var maxAwareness = 8
    /// Gossip rounds between probes, to `gossipFanout` random members.
    public var gossipInterval: Duration = .milliseconds(200)
    public var gossipFanout = 3
    /// Full state exchange over TCP with one random member (anti-entropy). Above 32 members the
    /// interval grows with `log2(n / 32)` (memberlist's scaling), so the cluster's total stays flat.
    public var pushPullInterval: Duration = .seconds(15)
    /// Dead members are still gossiped to this long, so a falsely accused node hears it and refutes.
    public var gossipToTheDead: Duration = .seconds(30)
    /// Every interval, one dead member (or a seed that is not a live member) is sent a full state
    /// exchange, so partitions heal by themselves.
    public var reconnectInterval: Duration = .seconds(3)
    /// Dead members are kept (and re-contacted) this long, then forgotten with their node-scoped state.
    public var reapDeadAfter: Duration = .seconds(3600)
    /// Left members are forgotten after this long (they left on purpose; nothing to reconnect to).
    public var reapLeftAfter: Duration = .seconds(600)
    /// Payload limit of a sealed datagram, header and seal included (`--gossip-max-datagram`).
    public var maxDatagramBytes = 1400
    /// How often a node that has not joined yet asks its seeds again.
    public var joinRetryInterval: Duration = .seconds(1)
    /// Entries under these prefixes are forgotten once their age (as carried with them, see
    /// `GossipUpdate.state`) passes the lifetime.
    public var stateTTL: [String: Duration] = ["rate/": .seconds(26 * 3600), "health/": .seconds(30)]
    /// Keys `<prefix><node>` or `<prefix><node>/…` belong to that node and go when it is reaped.
    public var nodeScopedPrefixes: [String] = ["health/", "rate/"]
    /// A fetch of announced entries not answered in this time may be asked again.
    public var fetchTimeout: Duration = .seconds(2)
    /// A refutation is sent at once to this many live members, besides being gossiped.
    public var refutationFanout = 64
    /// An urgent large entry's notice is sent at once to this many live members (small entries: to all).
    public var urgentNoticeFanout = 16
    /// Largest TCP frame (a full state exchange or a fetch answer) sent or accepted.
    public var maxStreamBytes = 32 * 1024 * 1024
    /// Frames older than this by their sender's clock are dropped, as are repeats within it.
    public var replayWindow: Duration = .seconds(30)

    public init() {}

    /// Bytes of a message body that fit in one datagram sent by `sender`.
    public func messageBudget(sender: String) -> Int {
        maxDatagramBytes - ClusterKeyring.sealOverhead - WireCodec.headerSize(sender: sender)
    }

    /// Entries larger than this (encoded) are announced by notice and fetched over TCP.
    public var maxInlineStateBytes: Int { maxDatagramBytes / 2 }
}

/// What the shell must do after an event.
public enum SwimDirective: Sendable, Hashable {
    /// A datagram (UDP); the message fits `SwimSettings.maxDatagramBytes` once framed and sealed.
    case send(GossipMessage, to: MemberAddress)
    /// A request over TCP to the member's gossip port; the answer goes to `receive`.
    case exchange(GossipMessage, with: MemberAddress)
    /// A member joined or changed status (including this node being refuted or leaving).
    case memberChanged(Member)
    /// A replicated state entry changed (published here or learnt from others); `ageMillis` is how
    /// long ago it was written.
    case stateChanged(StateEntry, ageMillis: UInt64)
    /// An entry expired or belonged to a reaped member.
    case stateRemoved(key: String)
    /// Two processes claim one node id: `claimant` was refused because `existing` is alive.
    case conflict(existing: Member, claimant: Member)
}

/// SWIM with the Lifeguard refinements, as a pure state machine: events in (`tick`, `receive`,
/// `answer`, `join`, `leave`, `publish`), directives out. Time (`now`, a monotonic duration since
/// any fixed point) and randomness (a seed) are injected, so a simulation can run a thousand
/// members deterministically; `GossipAgent` does the I/O.
///
/// - Probing: one member per period, round-robin over a shuffled list; no ack within the probe
///   timeout → `pingRequest` to k others, who relay an ack or answer with a nack; no ack by the end
///   of the period → suspect (a member announced as `leaving` becomes `left` instead).
/// - Suspicion: a suspect is declared dead after a timeout that starts at the ceiling and falls
///   logarithmically toward the floor as independent confirmations arrive; the member refutes by
///   raising its incarnation. A ping to a suspect carries the suspicion to it alone (buddy system).
/// - Local health: failed probes without nacks and having to refute raise a multiplier that
///   stretches this node's own timeouts; successful probes lower it.
/// - Dissemination: updates ride on every datagram, membership before state, fewest-sent first,
///   packed to the byte, each sent up to λ·log n times. Entries too large for a datagram travel
///   as notices; peers fetch them over TCP. A periodic full exchange over TCP repairs whatever was
///   missed, and dead members and seeds are re-contacted so partitions heal.
public struct SwimNode: Sendable {
    public let settings: SwimSettings
    public private(set) var myself: Member
    /// Every other member heard of, including dead and left ones until they are reaped.
    public private(set) var members: [String: Member] = [:]
    /// Live members other than this node, sorted by id; kept in step with `members` by `setMember`.
    private var liveCache: [Member]?
    /// The replicated state, by key.
    public private(set) var state: [String: StateEntry] = [:]
    /// Lifeguard's local health multiplier: 0 when healthy.
    public private(set) var awareness = 0
    /// False until a state exchange with a member succeeded (or there were no seeds).
    public private(set) var joined = false
    /// Announced `left`: nothing more is sent or handled.
    public private(set) var hasLeft = false
    /// A live member with this node's id at another address, if one was seen.
    public private(set) var conflict: Member?

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

    private enum Queued: Sendable {
        /// A membership update with its encoded size (members do not change while queued).
        case member(Member, accuser: String?, size: Int)
        case state(key: String)
    }

    private var random: SplitMix64
    private var sequence: UInt32 = 0
    private var probe: Probe?
    private var nextProbeAt: Duration = .zero
    private var probeOrder: [String] = []
    private var probeIndex = 0
    private var relays: [UInt32: Relay] = [:]
    private var suspicions: [String: Suspicion] = [:]
    /// Membership updates (group 0) go before urgent state (group 1), which goes before routine state (group 2).
    private var queue = BroadcastQueue<Queued>(groups: 3)
    /// Versions of entries published as urgent, by key: their notices say so and travel first.
    private var urgentVersions: [String: UInt64] = [:]
    private var goneAt: [String: Duration] = [:]
    /// Each entry's encoded size (without its age) and digest, computed once per version.
    private struct EntryMeta: Sendable {
        var sizeWithoutAge: Int
        var digest: UInt64
        init(_ entry: StateEntry) {
            // kind, key, version, writer, value (the age's varint is added when sent)
            sizeWithoutAge =
                1 + WireCodec.stringSize(entry.key) + WireCodec.varintSize(entry.version) + WireCodec.stringSize(entry.writer)
                + WireCodec.stringSize(entry.value)
            digest = entry.digest
        }
    }
    private var entryMeta: [String: EntryMeta] = [:]
    /// When each entry was written, on this node's clock (now − its age at receipt).
    private var bornAt: [String: Duration] = [:]
    /// Keys asked for by fetch, with the version wanted and when the ask lapses.
    private var pendingFetches: [String: (version: UInt64, until: Duration)] = [:]
    /// Members reaped recently, with their last incarnation: stale news does not bring them back.
    private var reaped: [String: (incarnation: UInt64, at: Duration)] = [:]
    private var nextGossipAt: Duration = .zero
    private var nextPushPullAt: Duration
    private var nextReconnectAt: Duration = .zero
    private var nextHousekeepingAt: Duration = .zero
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
    public var liveCount: Int { 1 + (liveCache?.count ?? members.values.filter { !$0.status.isGone }.count) }

    /// Every member including this node, sorted by id.
    public var allMembers: [Member] { ([myself] + members.values).sorted { $0.id < $1.id } }

    /// How many times an update is sent before it leaves the queue (λ·log n).
    public var retransmitLimit: Int {
        settings.retransmitMultiplier * max(1, Int(log10(Double(liveCount + 1)).rounded(.up)))
    }

    /// The push-pull interval at the current size (memberlist's `pushPullScale`).
    public var scaledPushPullInterval: Duration {
        let n = liveCount
        guard n > 32 else { return settings.pushPullInterval }
        let factor = Int((log2(Double(n)) - log2(32)).rounded(.up)) + 1
        return settings.pushPullInterval * factor
    }

    /// How long ago an entry was written, on this node's clock.
    public func ageMillis(of key: String, now: Duration) -> UInt64? {
        bornAt[key].map { Self.millis(max(.zero, now - $0)) }
    }

    /// Updates waiting to be gossiped (membership and state).
    public var queuedUpdates: Int { queue.count }

    // MARK: Events

    /// Starts joining through `seeds` (their addresses; this node's own is skipped) with a full
    /// state exchange over TCP. With no other seed this node starts a new cluster.
    public mutating func join(seeds: [MemberAddress], now: Duration) -> [SwimDirective] {
        self.seeds = seeds.filter { $0 != myself.address }
        nextProbeAt = now + settings.probeInterval
        nextGossipAt = now + settings.gossipInterval
        nextPushPullAt = now + scaledPushPullInterval
        nextReconnectAt = now + settings.reconnectInterval
        nextHousekeepingAt = now + .seconds(1)
        guard !self.seeds.isEmpty else {
            joined = true
            return []
        }
        nextJoinAt = now + settings.joinRetryInterval
        return self.seeds.map { .exchange(syncMessage(isReply: false, now: now), with: $0) }
    }

    /// Announces that this node is draining: it keeps answering probes, peers stop forwarding to
    /// it, and if it stops answering before it leaves it is `left`, never suspected.
    public mutating func startLeaving(now: Duration) -> [SwimDirective] {
        guard !hasLeft, myself.status != .leaving else { return [] }
        myself.incarnation += 1
        myself.status = .leaving
        return announceMyself()
    }

    /// Leaves the cluster gracefully: announces `left` to every live member directly (and in
    /// later gossip), so no one suspects this node. Nothing is sent or handled afterwards.
    public mutating func leave(now: Duration) -> [SwimDirective] {
        guard !hasLeft else { return [] }
        myself.incarnation += 1
        myself.status = .left
        let directives = announceMyself()
        hasLeft = true
        return directives
    }

    private mutating func announceMyself() -> [SwimDirective] {
        enqueue(member: myself, accuser: nil)
        var directives: [SwimDirective] = [.memberChanged(myself)]
        for member in liveMembers(excluding: []) {
            directives.append(.send(.gossip(from: myself.id, updates: [.member(myself, accuser: nil)]), to: member.address))
        }
        return directives
    }

    /// Writes a replicated state entry owned by (or set through) this node. `wallClockMillis`
    /// seeds the version (a hybrid clock: never below what this node has seen), so later writes
    /// from any node outrank earlier ones.
    ///
    /// `urgent` (counters that limit requests, a change in what the node routes around) also
    /// sends the entry, or its notice, straight to every live member.
    public mutating func publish(key: String, value: String, wallClockMillis: UInt64, now: Duration, urgent: Bool = false)
        -> [SwimDirective]
    {
        let version = max(lastVersion + 1, wallClockMillis, (state[key]?.version ?? 0) + 1)
        lastVersion = version
        let entry = StateEntry(key: key, version: version, writer: myself.id, value: value)
        state[key] = entry
        entryMeta[key] = EntryMeta(entry)
        bornAt[key] = now
        if urgent { urgentVersions[key] = version } else { urgentVersions[key] = nil }
        enqueue(.state(key: key), key: "s:" + key)
        var directives: [SwimDirective] = [.stateChanged(entry, ageMillis: 0)]
        if urgent, let update = wireUpdate(forKey: key, now: now)?.update {
            // A small entry goes to every live member; a large one's notice to a few, who fetch it
            // and pass the notice on (every member fetching from this node at once would be a stampede).
            let live = liveMembers(excluding: [])
            let targets: [Member]
            if case .notice = update { targets = pick(from: live, count: settings.urgentNoticeFanout) } else { targets = live }
            for member in targets {
                directives.append(.send(.gossip(from: myself.id, updates: [update]), to: member.address))
            }
        }
        return directives
    }

    /// Loads state entries saved by an earlier run (they keep their versions, so newer news from
    /// the cluster still wins).
    public mutating func restore(_ entries: [StateEntry], now: Duration) -> [SwimDirective] {
        apply(entries.map { .state($0, ageMillis: 0) }, from: nil, now: now)
    }

    /// Drives every timer: probes, indirect probes, suspicion timeouts, relays, gossip rounds,
    /// push-pull, reconnection, reaping and join retries. Call it often (every ~10–50 ms).
    public mutating func tick(now: Duration) -> [SwimDirective] {
        guard !hasLeft else { return [] }
        _ = liveMembers(excluding: [])  // keeps `liveCount` O(1)
        var directives: [SwimDirective] = []
        if !joined && now >= nextJoinAt {
            nextJoinAt = now + settings.joinRetryInterval
            directives += seeds.map { .exchange(syncMessage(isReply: false, now: now), with: $0) }
        }
        directives += tickRelays(now: now)
        directives += tickProbe(now: now)
        directives += tickSuspicions(now: now)
        if now >= nextGossipAt {
            nextGossipAt = now + settings.gossipInterval
            directives += gossipRound(now: now)
        }
        if now >= nextPushPullAt {
            nextPushPullAt = now + scaledPushPullInterval
            if let partner = pick(from: liveMembers(excluding: []), count: 1).first {
                directives.append(.exchange(syncMessage(isReply: false, now: now), with: partner.address))
            }
        }
        if joined && now >= nextReconnectAt {
            nextReconnectAt = now + settings.reconnectInterval
            if let address = reconnectTarget() {
                directives.append(.exchange(syncMessage(isReply: false, now: now), with: address))
            }
        }
        if now >= nextHousekeepingAt {
            nextHousekeepingAt = now + .seconds(1)
            directives += housekeeping(now: now)
        }
        return directives
    }

    /// Handles a datagram, or the answer to an `exchange`, from `address` (a member's gossip address).
    public mutating func receive(_ message: GossipMessage, from address: MemberAddress, now: Duration) -> [SwimDirective] {
        guard !hasLeft else { return [] }
        _ = liveMembers(excluding: [])
        var directives: [SwimDirective] = []
        switch message {
        case .ping(let sequence, _, let target, let updates):
            directives += apply(updates, from: address, now: now)
            // A ping meant for an earlier node at this address is not ours to answer.
            if target == myself.id {
                directives.append(.send(packed(.ack(sequence: sequence, from: myself.id, updates: []), for: nil, now: now), to: address))
            }
        case .pingRequest(let originSequence, _, let target, let updates):
            directives += apply(updates, from: address, now: now)
            let sequence = nextSequence()
            relays[sequence] = Relay(origin: address, originSequence: originSequence, deadline: now + scaled(settings.probeTimeout))
            directives.append(
                .send(
                    packed(.ping(sequence: sequence, from: myself.id, target: target.id, updates: []), for: target.id, now: now),
                    to: target.address))
        case .ack(let sequence, let from, let updates):
            directives += apply(updates, from: address, now: now)
            if let relay = relays.removeValue(forKey: sequence) {
                directives.append(
                    .send(
                        packed(.ack(sequence: relay.originSequence, from: from, updates: []), for: nil, now: now),
                        to: relay.origin))
            } else if probe?.sequence == sequence {
                probe = nil
                awareness = max(0, awareness - 1)
            }
        case .nack(let sequence, _, let updates):
            directives += apply(updates, from: address, now: now)
            if probe?.sequence == sequence { probe?.nacks += 1 }
        case .gossip(_, let updates):
            directives += apply(updates, from: address, now: now)
        case .sync(let from, let remoteMembers, let remoteState, let isReply):
            directives += absorbSync(from: from, members: remoteMembers, state: remoteState, address: from.address, now: now)
            if isReply && conflict == nil { joined = true }
        case .entries(_, let updates):
            directives += apply(updates, from: address, now: now)
        case .fetch:
            break  // only over TCP, through `answer`
        }
        // Anything from a member we know means we are in the cluster.
        if !joined && conflict == nil && members[message.sender].map({ !$0.status.isGone }) == true { joined = true }
        return directives
    }

    /// Answers a request that arrived over TCP: a state exchange is answered with this node's
    /// state, a fetch with the entries asked for. Datagrams never get state back.
    public mutating func answer(_ request: GossipMessage, now: Duration) -> (reply: GossipMessage?, directives: [SwimDirective]) {
        guard !hasLeft else { return (nil, []) }
        switch request {
        case .sync(let from, let remoteMembers, let remoteState, false):
            let directives = absorbSync(from: from, members: remoteMembers, state: remoteState, address: from.address, now: now)
            return (syncMessage(isReply: true, now: now), directives)
        case .fetch(_, let keys):
            let updates = keys.prefix(4096).compactMap { key in
                state[key].map { GossipUpdate.state($0, ageMillis: ageMillis(of: key, now: now) ?? 0) }
            }
            return (.entries(from: myself.id, updates: updates), [])
        default:
            return (nil, [])
        }
    }

    // MARK: Probing

    private mutating func tickProbe(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        if var current = probe {
            if !current.indirectSent && now >= current.sentAt + scaled(settings.probeTimeout) {
                current.indirectSent = true
                if let target = members[current.target] {
                    let helpers = pick(from: liveMembers(excluding: []), count: settings.indirectChecks, skipping: target.id)
                    current.helpers = helpers.count
                    for helper in helpers {
                        let request = GossipMessage.pingRequest(sequence: current.sequence, from: myself.id, target: target, updates: [])
                        directives.append(.send(packed(request, for: helper.id, now: now), to: helper.address))
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
                    if target.status == .leaving {
                        var gone = target
                        gone.status = .left
                        directives += apply([.member(gone, accuser: nil)], from: nil, now: now)
                    } else {
                        directives += suspect(target, accuser: myself.id, now: now)
                    }
                }
            }
        }
        guard probe == nil, now >= nextProbeAt else { return directives }
        nextProbeAt = now + scaled(settings.probeInterval)
        guard let target = nextProbeTarget() else { return directives }
        let sequence = nextSequence()
        probe = Probe(target: target.id, sequence: sequence, sentAt: now)
        directives.append(
            .send(
                packed(
                    .ping(sequence: sequence, from: myself.id, target: target.id, updates: []), for: target.id, now: now,
                    counted: true), to: target.address))
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
            directives.append(
                .send(
                    packed(.nack(sequence: relay.originSequence, from: myself.id, updates: []), for: nil, now: now),
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
                enqueue(member: suspected, accuser: accuser)
            }
            return []
        }
        return apply([.member(suspected, accuser: accuser)], from: nil, now: now)
    }

    /// Lifeguard: `max(min, max − (max − min) · log(C + 1) / log(K + 1))`.
    public func suspicionTimeout(confirmations: Int) -> Duration {
        let n = Double(liveCount)
        let floor = settings.probeInterval * (Double(settings.suspicionMultiplier) * max(1, log10(n)))
        let ceiling = floor * Double(settings.suspicionMaxTimeoutMultiplier)
        // K: independent confirmations that bring the timeout to the floor (never more than the others can give).
        let wanted = min(settings.suspicionConfirmations, max(0, liveCount - 2))
        guard wanted >= 1 else { return floor }
        let fraction = log(Double(confirmations + 1)) / log(Double(wanted + 1))
        return max(floor, ceiling - (ceiling - floor) * min(1, fraction))
    }

    private mutating func tickSuspicions(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        for (id, suspicion) in suspicions.sorted(by: { $0.key < $1.key }) {
            // Stretched by local health too: a node that is itself slow hears refutations late.
            guard now - suspicion.startedAt >= scaled(suspicionTimeout(confirmations: suspicion.confirmations.count)),
                var member = members[id], member.status == .suspect, member.incarnation == suspicion.incarnation
            else { continue }
            member.status = .dead
            directives += apply([.member(member, accuser: nil)], from: nil, now: now)
        }
        return directives
    }

    // MARK: Applying news

    /// Merges a peer's full state. Its dead members become suspects here (as memberlist does), so
    /// a stale view from the other side of a healed partition gives them time to refute.
    private mutating func absorbSync(
        from: Member, members remoteMembers: [Member], state remoteState: [GossipUpdate],
        address: MemberAddress, now: Duration
    ) -> [SwimDirective] {
        var updates: [GossipUpdate] = [.member(from, accuser: nil)]
        for var member in remoteMembers {
            if member.status == .dead && member.id != myself.id { member.status = .suspect }
            updates.append(.member(member, accuser: nil))
        }
        return apply(updates + remoteState, from: address, now: now)
    }

    private mutating func apply(_ updates: [GossipUpdate], from address: MemberAddress?, now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        var wanted: [String] = []
        for update in updates {
            switch update {
            case .member(let member, let accuser):
                directives += applyMember(member, accuser: accuser, now: now)
            case .state(let entry, let age):
                directives += applyState(entry, ageMillis: age, now: now)
            case .notice(let notice):
                guard !isExpired(key: notice.key, ageMillis: notice.ageMillis), ownerAllows(notice.key) else { continue }
                if notice.urgent, (urgentVersions[notice.key] ?? 0) < notice.version { urgentVersions[notice.key] = notice.version }
                if let current = state[notice.key] {
                    guard (notice.version, notice.writer) > (current.version, current.writer) else { continue }
                    if entryMeta[notice.key]?.digest == notice.digest {
                        // Same value, newer version: a refresh, nothing to fetch.
                        let refreshed = StateEntry(key: notice.key, version: notice.version, writer: notice.writer, value: current.value)
                        directives += applyState(refreshed, ageMillis: notice.ageMillis, now: now)
                        continue
                    }
                }
                if let pending = pendingFetches[notice.key], pending.version >= notice.version, now < pending.until { continue }
                guard address != nil else { continue }
                pendingFetches[notice.key] = (notice.version, now + settings.fetchTimeout)
                wanted.append(notice.key)
            }
        }
        if let address, !wanted.isEmpty {
            directives.append(.exchange(.fetch(from: myself.id, keys: wanted), with: address))
        }
        return directives
    }

    private mutating func applyState(_ entry: StateEntry, ageMillis: UInt64, now: Duration) -> [SwimDirective] {
        if let current = state[entry.key], !entry.supersedes(current) { return [] }
        guard !isExpired(key: entry.key, ageMillis: ageMillis), ownerAllows(entry.key) else { return [] }
        state[entry.key] = entry
        entryMeta[entry.key] = EntryMeta(entry)
        bornAt[entry.key] = now - .milliseconds(Int64(clamping: ageMillis))
        if let pending = pendingFetches[entry.key], pending.version <= entry.version { pendingFetches[entry.key] = nil }
        lastVersion = max(lastVersion, entry.version)
        enqueue(.state(key: entry.key), key: "s:" + entry.key)
        return [.stateChanged(entry, ageMillis: ageMillis)]
    }

    /// Node-scoped keys of members reaped or never heard of are refused, so a peer that has not
    /// reaped yet cannot bring them back. This node's own keys are always taken: a restarted node
    /// resumes from what the cluster holds for it.
    private func ownerAllows(_ key: String) -> Bool {
        guard let owner = owner(of: key) else { return true }
        return owner == myself.id || members[owner] != nil
    }

    private func owner(of key: String) -> String? {
        for prefix in settings.nodeScopedPrefixes where key.hasPrefix(prefix) {
            let rest = key.dropFirst(prefix.count)
            return String(rest.prefix { $0 != "/" })
        }
        return nil
    }

    private func isExpired(key: String, ageMillis: UInt64) -> Bool {
        for (prefix, ttl) in settings.stateTTL where key.hasPrefix(prefix) {
            return ageMillis >= Self.millis(ttl)
        }
        return false
    }

    private mutating func applyMember(_ member: Member, accuser: String?, now: Duration) -> [SwimDirective] {
        if member.id == myself.id {
            if member.address != myself.address && !member.status.isGone && member.status != .suspect {
                // Another process claims this node's id: refuse and say so; do not join through it.
                let isNew = conflict != member
                conflict = member
                joined = false
                return isNew ? [.conflict(existing: member, claimant: myself)] : []
            }
            // News that I am suspect or dead: refute with a higher incarnation (unless I left).
            guard member.status == .suspect || member.status == .dead, member.incarnation >= myself.incarnation else { return [] }
            myself.incarnation = max(myself.incarnation + 1, member.incarnation + 1)
            // Lifeguard: being accused (suspected or declared dead) means this node may be the slow one.
            awareness = min(settings.maxAwareness - 1, awareness + 1)
            enqueue(member: myself, accuser: nil)
            // The refutation also goes straight to up to `refutationFanout` live members: the
            // accusers' timers are running, and gossip alone may miss one of them on a lossy network.
            var directives: [SwimDirective] = [.memberChanged(myself)]
            let refutation = GossipMessage.gossip(from: myself.id, updates: [.member(myself, accuser: nil)])
            for target in pick(from: liveMembers(excluding: []), count: settings.refutationFanout) {
                directives.append(.send(refutation, to: target.address))
            }
            return directives
        }
        var member = member
        if let current = members[member.id] {
            if current.address != member.address && !current.status.isGone && !member.status.isGone {
                // Two live processes with one id: the one known first keeps it.
                return [.conflict(existing: current, claimant: member)]
            }
            // A suspicion of a member that announced it is leaving: it left.
            if current.status == .leaving && member.status == .suspect && member.incarnation == current.incarnation {
                member.status = .left
            }
            guard member.supersedes(current) else {
                // Same suspicion from someone else: a confirmation.
                if member.status == .suspect, current.status == .suspect, member.incarnation == current.incarnation,
                    let accuser, var suspicion = suspicions[member.id], accuser != suspicion.accuser,
                    suspicion.confirmations.insert(accuser).inserted
                {
                    suspicions[member.id] = suspicion
                    enqueue(member: member, accuser: accuser)
                }
                return []
            }
        } else {
            // A member not known here: only its own announcement (alive or leaving) makes it known —
            // news of its suspicion or end is stale (memberlist ignores it too), and after it was
            // reaped only a newer life (a higher incarnation) counts.
            guard member.status == .alive || member.status == .leaving else { return [] }
            if let last = reaped[member.id], member.incarnation <= last.incarnation { return [] }
        }
        let isNew = members[member.id] == nil
        setMember(member)
        reaped[member.id] = nil
        switch member.status {
        case .suspect:
            suspicions[member.id] = Suspicion(incarnation: member.incarnation, startedAt: now, accuser: accuser)
        case .alive, .leaving:
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
        enqueue(member: member, accuser: accuser)
        return [.memberChanged(member)]
    }

    // MARK: Reconnection and reaping

    /// A dead member or a seed that is not a live member, at random.
    private mutating func reconnectTarget() -> MemberAddress? {
        let live = Set(liveMembers(excluding: []).map(\.address))
        var candidates = members.values.filter { $0.status == .dead }.sorted { $0.id < $1.id }.map(\.address)
        candidates += seeds.filter { !live.contains($0) }
        candidates = candidates.filter { !live.contains($0) && $0 != myself.address }
        guard !candidates.isEmpty else { return nil }
        return candidates[Int.random(in: 0..<candidates.count, using: &random)]
    }

    private mutating func housekeeping(now: Duration) -> [SwimDirective] {
        var directives: [SwimDirective] = []
        for (id, since) in goneAt.sorted(by: { $0.key < $1.key }) {
            guard let member = members[id] else { continue }
            let limit = member.status == .left ? settings.reapLeftAfter : settings.reapDeadAfter
            guard now - since >= limit else { continue }
            setMember(nil, id: id)
            goneAt[id] = nil
            queue.remove("m:" + id)
            reaped[id] = (member.incarnation, now)
            for key in state.keys.sorted() where owner(of: key) == id {
                directives += removeEntry(key)
            }
        }
        reaped = reaped.filter { now - $0.value.at < settings.reapLeftAfter }
        for key in state.keys.sorted() {
            if let age = ageMillis(of: key, now: now), isExpired(key: key, ageMillis: age) { directives += removeEntry(key) }
        }
        pendingFetches = pendingFetches.filter { now < $0.value.until }
        return directives
    }

    private mutating func removeEntry(_ key: String) -> [SwimDirective] {
        state[key] = nil
        entryMeta[key] = nil
        urgentVersions[key] = nil
        bornAt[key] = nil
        queue.remove("s:" + key)
        return [.stateRemoved(key: key)]
    }

    // MARK: Dissemination

    private mutating func enqueue(_ item: Queued, key: String) {
        switch item {
        case .member: queue.enqueue(item, key: key, group: 0)
        case .state(let stateKey):
            let urgent = state[stateKey].map { urgentVersions[stateKey] == $0.version } ?? false
            queue.enqueue(item, key: key, group: urgent ? 1 : 2)
        }
    }

    private mutating func enqueue(member: Member, accuser: String?) {
        let update = GossipUpdate.member(member, accuser: accuser)
        enqueue(.member(member, accuser: accuser, size: WireCodec.size(of: update)), key: "m:" + member.id)
    }

    /// A state entry as it travels now: whole, or as a notice when it is too large for a datagram.
    private func wireUpdate(forKey key: String, now: Duration) -> (update: GossipUpdate, size: Int)? {
        guard let entry = state[key], let meta = entryMeta[key] else { return nil }
        let age = ageMillis(of: key, now: now) ?? 0
        let wholeSize = meta.sizeWithoutAge + WireCodec.varintSize(age)
        if wholeSize <= settings.maxInlineStateBytes { return (.state(entry, ageMillis: age), wholeSize) }
        let notice = GossipUpdate.notice(
            StateNotice(
                key: key, version: entry.version, writer: entry.writer, digest: meta.digest, ageMillis: age,
                urgent: urgentVersions[key] == entry.version))
        return (notice, WireCodec.size(of: notice))
    }

    /// Fills `message` with queued updates up to the datagram budget: membership before state,
    /// fewest-sent first, newest first among equals. A ping to a suspect starts with its suspicion,
    /// meant for it alone (buddy system: not queued, so it is neither broadcast nor a confirmation).
    /// Only transmissions to random members — gossip rounds and probes — count toward an update's
    /// λ·log n: acks, relays and indirect probes go to whoever is busy probing, and counting them
    /// would spend an update on the few members involved in failing probes (measured: at 15 % loss
    /// a refutation then missed one member for its whole suspicion timeout).
    private mutating func packed(_ message: GossipMessage, for recipient: String?, now: Duration, counted: Bool = false) -> GossipMessage {
        var budget = settings.messageBudget(sender: myself.id) - WireCodec.size(of: message) - 2  // room for the count to grow
        var updates: [GossipUpdate] = []
        if let recipient, let member = members[recipient], member.status == .suspect {
            let buddy = GossipUpdate.member(member, accuser: myself.id)
            let size = WireCodec.size(of: buddy)
            if size <= budget {
                updates.append(buddy)
                budget -= size
            }
        }
        if !queue.isEmpty {
            let limit = retransmitLimit
            var stale: [String] = []
            // Moved out while visiting (the visit reads the rest of the node); moved back after, uncopied.
            var pending = queue
            queue = BroadcastQueue(groups: 3)
            defer { queue = pending }
            var misses = 0
            pending.visit(limit: limit, counting: counted) { key, item in
                // Full, or nearly: a few entries in a row that do not fit end the search.
                guard budget >= 8, misses < 8 else { return .stop }
                let update: GossipUpdate
                let size: Int
                switch item {
                case .member(let member, let accuser, let memberSize):
                    (update, size) = (.member(member, accuser: accuser), memberSize)
                case .state(let stateKey):
                    guard let wire = wireUpdate(forKey: stateKey, now: now) else {
                        stale.append(key)
                        return .skip
                    }
                    (update, size) = wire
                }
                guard size <= budget else {
                    misses += 1
                    return .skip
                }
                misses = 0
                updates.append(update)
                budget -= size
                return .take
            }
            for key in stale { pending.remove(key) }
        }
        return message.withUpdates(updates)
    }

    private mutating func gossipRound(now: Duration) -> [SwimDirective] {
        guard !queue.isEmpty else { return [] }
        // Recently dead members too: a node wrongly declared dead learns it and refutes.
        let recentlyGone = goneAt.compactMap { id, since in
            now - since < settings.gossipToTheDead ? members[id].flatMap { $0.status == .dead ? $0 : nil } : nil
        }
        let targets = pick(from: liveMembers(excluding: []) + recentlyGone.sorted { $0.id < $1.id }, count: settings.gossipFanout)
        var directives: [SwimDirective] = []
        for target in targets {
            let message = packed(.gossip(from: myself.id, updates: []), for: target.id, now: now, counted: true)
            guard case .gossip(_, let updates) = message, !updates.isEmpty else { break }
            directives.append(.send(message, to: target.address))
        }
        return directives
    }

    /// The full state for a TCP exchange: every member known and every entry, large ones as notices.
    func syncMessage(isReply: Bool, now: Duration) -> GossipMessage {
        let known = members.values.sorted { $0.id < $1.id }
        let entries = state.keys.sorted().compactMap { wireUpdate(forKey: $0, now: now)?.update }
        return .sync(from: myself, members: known, state: entries, isReply: isReply)
    }

    // MARK: Helpers

    /// Writes (or, with nil, removes) a member and keeps the sorted live list in step: O(log n) to
    /// find its place, no re-sort.
    private mutating func setMember(_ member: Member?, id: String? = nil) {
        let id = member?.id ?? id ?? ""
        members[id] = member
        guard var live = liveCache else { return }
        liveCache = nil  // uniquely referenced while edited
        var low = 0, high = live.count
        while low < high {
            let middle = (low + high) / 2
            if live[middle].id < id { low = middle + 1 } else { high = middle }
        }
        let present = low < live.count && live[low].id == id
        switch (member.map { !$0.status.isGone } ?? false, present) {
        case (true, true): live[low] = member!
        case (true, false): live.insert(member!, at: low)
        case (false, true): live.remove(at: low)
        case (false, false): break
        }
        liveCache = live
    }

    private mutating func liveMembers(excluding excluded: Set<String>) -> [Member] {
        let live: [Member]
        if let liveCache {
            live = liveCache
        } else {
            live = members.values.filter { !$0.status.isGone }.sorted { $0.id < $1.id }
            liveCache = live
        }
        return excluded.isEmpty ? live : live.filter { !excluded.contains($0.id) }
    }

    /// `count` distinct candidates at random (other than `skipping`), in O(count): no copy of the candidates.
    private mutating func pick(from candidates: [Member], count: Int, skipping: String? = nil) -> [Member] {
        let eligible = candidates.count - (skipping.map { id in candidates.contains { $0.id == id } ? 1 : 0 } ?? 0)
        guard count < eligible else { return candidates.filter { $0.id != skipping }.shuffled(using: &random) }
        var chosen: [Int] = []
        while chosen.count < count {
            let index = Int.random(in: 0..<candidates.count, using: &random)
            if !chosen.contains(index) && candidates[index].id != skipping { chosen.append(index) }
        }
        return chosen.map { candidates[$0] }
    }

    private mutating func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    private func scaled(_ duration: Duration) -> Duration { duration * (awareness + 1) }

    static func millis(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds)) / 1_000_000_000_000_000
    }
}

extension GossipMessage {
    /// The same message with `updates` piggybacked (messages without updates are returned as they are).
    func withUpdates(_ updates: [GossipUpdate]) -> GossipMessage {
        switch self {
        case .ping(let sequence, let from, let target, _): .ping(sequence: sequence, from: from, target: target, updates: updates)
        case .pingRequest(let sequence, let from, let target, _):
            .pingRequest(sequence: sequence, from: from, target: target, updates: updates)
        case .ack(let sequence, let from, _): .ack(sequence: sequence, from: from, updates: updates)
        case .nack(let sequence, let from, _): .nack(sequence: sequence, from: from, updates: updates)
        case .gossip(let from, _): .gossip(from: from, updates: updates)
        case .sync, .fetch, .entries: self
        }
    }
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
