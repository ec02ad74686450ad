/// A member's liveness as the cluster agrees on it.
///
/// Updates about a member are ordered by incarnation, then by status: `alive(n) < leaving(n) <
/// suspect(n) < dead(n) = left(n) < alive(n+1)`. Only the member itself raises its incarnation — to refute a
/// suspicion, or when it restarts (a node's first incarnation is its boot time in milliseconds, so
/// a restarted node with the same id and address outranks its old, dead self).
public enum MemberStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case alive
    /// Draining after SIGTERM: still answers probes, but takes no forwarded requests; if it stops
    /// answering it is `left`, never suspected.
    case leaving
    case suspect, dead
    /// Left on purpose (graceful shutdown): gone like `dead`, but never suspected first.
    case left

    var rank: Int {
        switch self {
        case .alive: 0
        case .leaving: 1
        case .suspect: 2
        case .dead, .left: 3
        }
    }

    /// Dead or left: not probed, not a gossip target, not in the routing view.
    public var isGone: Bool { rank == 3 }
}

/// Where a member listens for gossip (UDP).
public struct MemberAddress: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`; nil when it does not parse.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port)
        else { return nil }
        let host = String(text[..<colon])
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }

    public static func < (lhs: MemberAddress, rhs: MemberAddress) -> Bool { (lhs.host, lhs.port) < (rhs.host, rhs.port) }
}

/// One member of the cluster, as gossiped.
public struct Member: Sendable, Hashable, Codable {
    /// The node's name (`--node-id`), unique in the cluster.
    public var id: String
    public var address: MemberAddress
    /// The region the node serves (`--region`).
    public var region: String
    public var incarnation: UInt64
    public var status: MemberStatus
    /// Where the node's HTTP API is reached (for forwarding region-pinned requests).
    public var apiURL: String?

    public init(
        id: String, address: MemberAddress, region: String, incarnation: UInt64, status: MemberStatus = .alive,
        apiURL: String? = nil
    ) {
        self.apiURL = apiURL
        self.id = id
        self.address = address
        self.region = region
        self.incarnation = incarnation
        self.status = status
    }

    /// Whether this update about a member should replace what is known (`current`).
    func supersedes(_ current: Member) -> Bool {
        if incarnation != current.incarnation { return incarnation > current.incarnation }
        return status.rank > current.status.rank
    }
}

/// One entry of the replicated key-value state that rides along with membership gossip: provider
/// health per node, regional routing tables, counters. Last writer wins by `(version, writer)`;
/// keys that only one node writes (its own health, its own counters) never conflict.
public struct StateEntry: Sendable, Hashable, Codable {
    public var key: String
    /// Monotonic per key: writers use a hybrid clock (milliseconds, then +1), see `SwimNode.publish`.
    public var version: UInt64
    /// The node that wrote this version; breaks version ties deterministically.
    public var writer: String
    public var value: String

    public init(key: String, version: UInt64, writer: String, value: String) {
        self.key = key
        self.version = version
        self.writer = writer
        self.value = value
    }

    func supersedes(_ current: StateEntry) -> Bool {
        (version, writer) > (current.version, current.writer)
    }

    /// FNV-1a over the value: tells a peer holding an older version whether the value changed
    /// (not a security measure; every datagram is authenticated).
    public var digest: UInt64 {
        func fnv(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x0000_0100_0000_01b3
            }
            return hash
        }
        var value = self.value
        return value.withUTF8(fnv)
    }
}

/// Announces a state entry too large to ride on a datagram: peers holding an older version
/// fetch it over TCP from whoever sent the notice. A notice whose digest matches the value a
/// peer already holds only refreshes its version and age (nothing to fetch).
public struct StateNotice: Sendable, Hashable {
    public var key: String
    public var version: UInt64
    public var writer: String
    public var digest: UInt64
    /// How long ago the entry was written, as the sender measured it.
    public var ageMillis: UInt64
    /// Published as urgent (a change in what its node routes around): gossiped before routine state.
    public var urgent: Bool

    public init(key: String, version: UInt64, writer: String, digest: UInt64, ageMillis: UInt64, urgent: Bool = false) {
        self.key = key
        self.version = version
        self.writer = writer
        self.digest = digest
        self.ageMillis = ageMillis
        self.urgent = urgent
    }
}

/// A piece of news carried on gossip messages.
public enum GossipUpdate: Sendable, Hashable {
    /// A member's status; `accuser` is who suspected it (counts as a confirmation of suspicion).
    case member(Member, accuser: String?)
    /// A state entry and how long ago it was written, as the sender measured it (each holder
    /// adds the time it kept the entry, so no wall clock is trusted for freshness).
    case state(StateEntry, ageMillis: UInt64)
    /// A large entry, announced without its value.
    case notice(StateNotice)
}

/// The SWIM wire protocol. Probes and gossip travel in datagrams of at most the configured size
/// (every one carries piggybacked updates, packed by bytes); full state exchanges and fetches of
/// large entries travel over TCP on the same port.
public enum GossipMessage: Sendable, Hashable {
    /// Are you alive? `target` lets a restarted node at the same address tell it was meant for its old self.
    case ping(sequence: UInt32, from: String, target: String, updates: [GossipUpdate])
    /// Please ping `target` for me (an indirect probe).
    case pingRequest(sequence: UInt32, from: String, target: Member, updates: [GossipUpdate])
    /// Alive: the answer to a ping, or relayed from an indirect probe.
    case ack(sequence: UInt32, from: String, updates: [GossipUpdate])
    /// A helper of an indirect probe did not hear from the target (Lifeguard): the asker's own
    /// network is fine.
    case nack(sequence: UInt32, from: String, updates: [GossipUpdate])
    /// Updates alone (the gossip round between probes).
    case gossip(from: String, updates: [GossipUpdate])
    /// TCP: full state exchange (join, anti-entropy, reconnection). Large entries appear as
    /// notices. A request is answered with the responder's own state (`isReply`).
    case sync(from: Member, members: [Member], state: [GossipUpdate], isReply: Bool)
    /// TCP: send me these entries (announced by notices).
    case fetch(from: String, keys: [String])
    /// TCP: the answer to `fetch`: the entries held, whole.
    case entries(from: String, updates: [GossipUpdate])

    public var sender: String {
        switch self {
        case .ping(_, let from, _, _), .pingRequest(_, let from, _, _), .ack(_, let from, _), .nack(_, let from, _),
            .gossip(let from, _), .fetch(let from, _), .entries(let from, _):
            from
        case .sync(let from, _, _, _): from.id
        }
    }

    /// Whether this message travels over TCP (state transfers) rather than UDP.
    public var isStream: Bool {
        switch self {
        case .sync, .fetch, .entries: true
        default: false
        }
    }
}
