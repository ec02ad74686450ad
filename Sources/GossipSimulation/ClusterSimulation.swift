import Foundation
import Gossip

/// Runs many `SwimNode`s against each other in virtual time, with a network that loses, delays and
/// partitions messages — deterministic for a given seed, so figures repeat exactly.
public struct ClusterSimulation {
    public struct Network: Sendable {
        public init(
            loss: Double = 0, delay: ClosedRange<Duration> = .microseconds(500) ... .milliseconds(5),
            slowDelay: Duration = .milliseconds(800)
        ) {
            self.loss = loss
            self.delay = delay
            self.slowDelay = slowDelay
        }

        /// Probability that any one message is lost.
        public var loss = 0.0
        /// One-way delay, uniform in this range.
        public var delay: ClosedRange<Duration> = .microseconds(500) ... .milliseconds(5)
        /// Extra delay on everything a slow member receives and sends (a CPU-starved process).
        public var slowDelay: Duration = .milliseconds(800)
    }

    private enum Kind { case datagram, request, reply }

    private struct Envelope {
        var deliverAt: Duration
        var order: UInt64
        var to: Int
        var from: MemberAddress
        var fromIndex: Int
        var message: GossipMessage
        var kind: Kind
    }

    public var nodes: [SwimNode] = []
    public var network: Network
    public var now: Duration = .zero
    /// Members that stopped (crashed): they neither receive nor send.
    public var crashed: Set<Int> = []
    public var slow: Set<Int> = []
    /// Pairs of members that cannot reach each other directly (either way).
    public var cut: Set<[Int]> = []
    /// Pairs `[from, to]`: `from` cannot reach `to`, though `to` reaches `from`.
    public var oneWay: Set<[Int]> = []
    /// Every status a node saw another member take, with when: (observer, member id, status, time).
    public var observations: [(observer: Int, member: String, status: MemberStatus, incarnation: UInt64, at: Duration)] = []
    /// Gone sightings by member: (observer, time), in order.
    private var goneSightings: [String: [(observer: Int, at: Duration)]] = [:]
    /// When each node first saw each state key at each version.
    public var stateSeen: [String: [Int: Duration]] = [:]
    /// Keys whose sightings `stateSeen` records (nil: every key; large runs name the few they ask about).
    public var trackedStateKeys: Set<String>?
    /// Every change of a tracked key on every node: (observer, version, time).
    public var stateSightings: [String: [(observer: Int, version: UInt64, at: Duration)]] = [:]

    /// When each node first held `key` at `version` or newer (tracked keys only).
    public func firstHeld(_ key: String, atLeast version: UInt64) -> [Int: Duration] {
        var first: [Int: Duration] = [:]
        for sighting in stateSightings[key] ?? [] where sighting.version >= version && first[sighting.observer] == nil {
            first[sighting.observer] = sighting.at
        }
        return first
    }
    public var messagesSent = 0
    /// Bytes on the wire (framed and sealed) per node: datagrams, and TCP requests and answers.
    public var datagramBytes: [Int] = []
    public var streamBytes: [Int] = []
    public var streamsOpened = 0
    /// Datagrams that would not fit the limit (must stay 0: the state machine packs to the byte).
    public var oversizeDatagrams = 0
    public var largestDatagram = 0
    public let tickStep: Duration = .milliseconds(20)
    /// Health reports as production publishes them: every node republishes `health/<id>` every
    /// `interval` (staggered), `bytes` long, with new content each time when `changing`.
    public var health: (interval: Duration, bytes: Int, changing: Bool)?
    private var healthRound: [Int] = []

    private var queue = Heap<Envelope> { ($0.deliverAt, $0.order) < ($1.deliverAt, $1.order) }
    private var order: UInt64 = 0
    private var random: SplitMix64
    private var indexByAddress: [MemberAddress: Int] = [:]

    public init(size: Int, network: Network = Network(), settings: SwimSettings = SwimSettings(), seed: UInt64 = 1) {
        self.network = network
        random = SplitMix64(seed: seed)
        datagramBytes = Array(repeating: 0, count: size)
        streamBytes = Array(repeating: 0, count: size)
        for index in 0..<size {
            let address = MemberAddress(host: "10.0.\(index / 250).\(index % 250 + 1)", port: 7946)
            indexByAddress[address] = index
            nodes.append(
                SwimNode(
                    myself: Member(
                        id: "node-\(index)", address: address, region: index % 2 == 0 ? "eu" : "us",
                        incarnation: 1),
                    settings: settings, seed: seed &+ UInt64(index) &* 7919))
        }
    }

    public func address(_ index: Int) -> MemberAddress { nodes[index].myself.address }

    /// Every node joins through node 0, then the cluster runs until every node knows every other.
    public mutating func formCluster(timeout: Duration = .seconds(60)) -> Duration? {
        let seed = address(0)
        for index in nodes.indices { perform(index, nodes[index].join(seeds: [seed], now: now)) }
        let start = now
        let formed = run(until: { sim in sim.nodes.allSatisfy { $0.liveCount == sim.nodes.count } }, timeout: timeout)
        return formed ? now - start : nil
    }

    /// Advances virtual time, delivering messages and ticking every live node every `tickStep`.
    public mutating func run(for duration: Duration) {
        let end = now + duration
        run(until: { sim in sim.now >= end }, timeout: duration + .seconds(1))
    }

    /// Runs until `done` holds or `timeout` passes; returns whether `done` held.
    @discardableResult
    public mutating func run(until done: (ClusterSimulation) -> Bool, timeout: Duration) -> Bool {
        let end = now + timeout
        var nextTick = now
        while now < end {
            if done(self) { return true }
            while let next = queue.peek(), next.deliverAt <= nextTick {
                _ = queue.pop()
                now = max(now, next.deliverAt)
                guard !crashed.contains(next.to) else { continue }
                switch next.kind {
                case .datagram, .reply:
                    perform(next.to, nodes[next.to].receive(next.message, from: next.from, now: now))
                case .request:
                    let (reply, directives) = nodes[next.to].answer(next.message, now: now)
                    perform(next.to, directives)
                    if let reply { stream(reply, from: next.to, to: next.fromIndex, kind: .reply) }
                }
            }
            now = nextTick
            for index in nodes.indices where !crashed.contains(index) {
                perform(index, nodes[index].tick(now: now))
            }
            if let health { publishHealth(health) }
            nextTick = now + tickStep
        }
        return done(self)
    }

    public mutating func publish(_ index: Int, key: String, value: String, urgent: Bool = false) {
        perform(
            index,
            nodes[index].publish(
                key: key, value: value, wallClockMillis: UInt64(now / .milliseconds(1)) + 1_000_000,
                now: now, urgent: urgent))
    }

    public mutating func leave(_ index: Int) {
        perform(index, nodes[index].leave(now: now))
        crashed.insert(index)
    }

    private mutating func publishHealth(_ health: (interval: Duration, bytes: Int, changing: Bool)) {
        if healthRound.count != nodes.count { healthRound = Array(repeating: -1, count: nodes.count) }
        let step = health.interval / nodes.count
        for index in nodes.indices where !crashed.contains(index) {
            // Node i publishes at i·step into each interval.
            let round = Int((now - step * index) / health.interval)
            guard now >= step * index, round > healthRound[index] else { continue }
            healthRound[index] = round
            let id = nodes[index].myself.id
            let stamp = health.changing ? "\(round)" : "0"
            let line = "vendor/model|provider/default 0 12,1,0,5400,12,480000,\(stamp) -\n"
            let value = String(repeating: line, count: max(1, health.bytes / line.utf8.count))
            publish(index, key: "health/" + id, value: value)
        }
    }

    /// Delivers directives a test produced by calling a node directly.
    public mutating func resend(from index: Int, _ directives: [SwimDirective]) { perform(index, directives) }

    private mutating func perform(_ index: Int, _ directives: [SwimDirective]) {
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                send(message, from: index, to: to)
            case .exchange(let message, let to):
                if let target = indexByAddress[to] {
                    streamsOpened += 1
                    stream(message, from: index, to: target, kind: .request)
                }
            case .memberChanged(let member):
                observations.append((index, member.id, member.status, member.incarnation, now))
                if member.status.isGone { goneSightings[member.id, default: []].append((index, now)) }
            case .stateChanged(let entry, _):
                if let trackedStateKeys, !trackedStateKeys.contains(entry.key) { continue }
                if trackedStateKeys != nil { stateSightings[entry.key, default: []].append((index, entry.version, now)) }
                let key = "\(entry.key)@\(entry.version)"
                if stateSeen[key]?[index] == nil { stateSeen[key, default: [:]][index] = now }
            case .stateRemoved, .conflict:
                break
            }
        }
    }

    /// A framed, sealed size as the agent would send it (header varints at their widest).
    public func wireSize(_ message: GossipMessage, from: Int) -> Int {
        WireCodec.size(of: message) + WireCodec.headerSize(sender: nodes[from].myself.id) + ClusterKeyring.sealOverhead
    }

    /// A TCP request or answer: lost only to a crash or a cut, never to random loss.
    private mutating func stream(_ message: GossipMessage, from: Int, to: Int, kind: Kind) {
        guard !crashed.contains(from) else { return }
        streamBytes[from] += wireSize(message, from: from) + 4
        if cut.contains([min(from, to), max(from, to)]) || oneWay.contains([from, to]) { return }
        let span = network.delay.upperBound - network.delay.lowerBound
        // Connect, then send.
        deliver(
            message, from: from, to: to, after: network.delay.lowerBound * 2 + span * Double.random(in: 0...1, using: &random), kind: kind)
    }

    /// Queues `message` for `to`, `delay` from now plus what a slow end adds.
    private mutating func deliver(_ message: GossipMessage, from: Int, to: Int, after delay: Duration, kind: Kind) {
        var delay = delay
        if slow.contains(from) { delay += network.slowDelay }
        if slow.contains(to) { delay += network.slowDelay }
        order += 1
        queue.push(
            Envelope(
                deliverAt: now + delay, order: order, to: to, from: nodes[from].myself.address, fromIndex: from,
                message: message, kind: kind))
    }

    private mutating func send(_ message: GossipMessage, from: Int, to address: MemberAddress) {
        guard let to = indexByAddress[address], !crashed.contains(from) else { return }
        messagesSent += 1
        let size = wireSize(message, from: from)
        datagramBytes[from] += size
        largestDatagram = max(largestDatagram, size)
        if size > nodes[from].settings.maxDatagramBytes { oversizeDatagrams += 1 }
        if cut.contains([min(from, to), max(from, to)]) || oneWay.contains([from, to]) { return }
        if network.loss > 0 && Double.random(in: 0..<1, using: &random) < network.loss { return }
        let span = network.delay.upperBound - network.delay.lowerBound
        deliver(
            message, from: from, to: to, after: network.delay.lowerBound + span * Double.random(in: 0...1, using: &random), kind: .datagram)
    }

    // MARK: Questions

    /// When each live observer first saw `member` dead (or left), after `since`.
    public func deathSightings(of member: String, since: Duration) -> [Int: Duration] {
        var first: [Int: Duration] = [:]
        for sighting in goneSightings[member] ?? [] where sighting.at >= since {
            if first[sighting.observer] == nil { first[sighting.observer] = sighting.at }
        }
        return first
    }

    /// Healthy members (not crashed, not leaving) that some node declared dead after `since`.
    public func falseDeaths(since: Duration) -> [String] {
        let healthy = Set(nodes.indices.filter { !crashed.contains($0) }.map { nodes[$0].myself.id })
        return Array(Set(observations.filter { $0.at >= since && $0.status == .dead && healthy.contains($0.member) }.map(\.member)))
            .sorted()
    }

    /// How many times healthy members were suspected after `since`: distinct (member, incarnation)
    /// suspicions, each refuted by a new incarnation.
    public func suspicions(since: Duration) -> Int {
        let healthy = Set(nodes.indices.filter { !crashed.contains($0) }.map { nodes[$0].myself.id })
        return Set(
            observations.filter { $0.at >= since && $0.status == .suspect && healthy.contains($0.member) }
                .map { "\($0.member)@\($0.incarnation)" }
        ).count
    }
}

/// A binary min-heap ordered by `less`.
struct Heap<Element> {
    private var items: [Element] = []
    private let less: (Element, Element) -> Bool

    init(less: @escaping (Element, Element) -> Bool) { self.less = less }

    func peek() -> Element? { items.first }

    mutating func push(_ item: Element) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(items[child], items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count && less(items[left], items[smallest]) { smallest = left }
            if right < items.count && less(items[right], items[smallest]) { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
