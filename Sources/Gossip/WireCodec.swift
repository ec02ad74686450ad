/// The compact binary encoding of gossip frames: varints and length-prefixed strings, so the
/// state machine can pack a datagram to the byte (`SwimNode` measures every update with
/// `WireCodec.size(of:)` before it adds it).
///
/// A frame is the plaintext inside the AES-GCM seal:
///
///     u8 format (2) · string sender · varint epoch · varint sequence · varint sentAtMillis · message
///
/// `epoch` is the sender's boot incarnation and `sequence` counts its frames in that life; with
/// `sentAtMillis` (its wall clock) they let receivers drop replays (`ReplayGuard`).
public enum WireCodec {
    public static let format: UInt8 = 2

    /// Bytes a frame's header takes at most for `sender` (varints at their widest).
    public static func headerSize(sender: String) -> Int { 1 + stringSize(sender) + 3 * 10 }

    // MARK: Encoding

    public static func encode(_ frame: GossipFrame) -> [UInt8] {
        var writer = WireWriter()
        writer.byte(format)
        writer.string(frame.sender)
        writer.varint(frame.epoch)
        writer.varint(frame.sequence)
        writer.varint(frame.sentAtMillis)
        writer.message(frame.message)
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(WireError) -> GossipFrame {
        var reader = WireReader(bytes)
        guard try reader.byte() == format else { throw .unknownFormat }
        let sender = try reader.string()
        let epoch = try reader.varint()
        let sequence = try reader.varint()
        let sentAt = try reader.varint()
        let message = try reader.message()
        guard reader.isAtEnd else { throw .trailingBytes }
        return GossipFrame(sender: sender, epoch: epoch, sequence: sequence, sentAtMillis: sentAt, message: message)
    }

    /// Encoded size of a message body (without the frame header).
    public static func size(of message: GossipMessage) -> Int {
        var writer = WireWriter()
        writer.message(message)
        return writer.bytes.count
    }

    /// Encoded size of one update inside a message's update list.
    public static func size(of update: GossipUpdate) -> Int {
        var writer = WireWriter()
        writer.update(update)
        return writer.bytes.count
    }

    public static func stringSize(_ text: String) -> Int { varintSize(UInt64(text.utf8.count)) + text.utf8.count }

    public static func varintSize(_ value: UInt64) -> Int {
        var value = value, size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }
}

/// One sealed unit on the wire: who sent it, in which life, its sequence and send time, and the message.
public struct GossipFrame: Sendable, Hashable {
    public var sender: String
    public var epoch: UInt64
    public var sequence: UInt64
    public var sentAtMillis: UInt64
    public var message: GossipMessage

    public init(sender: String, epoch: UInt64, sequence: UInt64, sentAtMillis: UInt64, message: GossipMessage) {
        self.sender = sender
        self.epoch = epoch
        self.sequence = sequence
        self.sentAtMillis = sentAtMillis
        self.message = message
    }
}

public enum WireError: Error, Hashable, CustomStringConvertible {
    case truncated, unknownFormat
    case unknownKind(UInt8)
    case badString, trailingBytes, tooLarge

    public var description: String {
        switch self {
        case .truncated: "the frame ends early"
        case .unknownFormat: "unknown frame format"
        case .unknownKind(let kind): "unknown message kind \(kind)"
        case .badString: "a string is not UTF-8"
        case .trailingBytes: "bytes after the message"
        case .tooLarge: "a length is larger than the frame"
        }
    }
}

private enum MessageKind: UInt8 {
    case ping = 1
    case pingRequest, ack, nack, gossip, sync, fetch, entries
}
private enum UpdateKind: UInt8 {
    case member = 1
    case state, notice
}

struct WireWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func fixed64(_ value: UInt64) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func string(_ text: String) {
        varint(UInt64(text.utf8.count))
        bytes.append(contentsOf: text.utf8)
    }

    mutating func optionalString(_ text: String?) {
        if let text {
            byte(1)
            string(text)
        } else {
            byte(0)
        }
    }

    mutating func member(_ member: Member) {
        string(member.id)
        string(member.address.host)
        varint(UInt64(member.address.port))
        string(member.region)
        varint(member.incarnation)
        byte(statusCode(member.status))
        optionalString(member.apiURL)
    }

    mutating func entry(_ entry: StateEntry) {
        string(entry.key)
        varint(entry.version)
        string(entry.writer)
        string(entry.value)
    }

    mutating func update(_ update: GossipUpdate) {
        switch update {
        case .member(let member, let accuser):
            byte(UpdateKind.member.rawValue)
            self.member(member)
            optionalString(accuser)
        case .state(let entry, let age):
            byte(UpdateKind.state.rawValue)
            self.entry(entry)
            varint(age)
        case .notice(let notice):
            byte(UpdateKind.notice.rawValue)
            string(notice.key)
            varint(notice.version)
            string(notice.writer)
            fixed64(notice.digest)
            varint(notice.ageMillis)
            byte(notice.urgent ? 1 : 0)
        }
    }

    mutating func updates(_ updates: [GossipUpdate]) {
        varint(UInt64(updates.count))
        for update in updates { self.update(update) }
    }

    mutating func message(_ message: GossipMessage) {
        switch message {
        case .ping(let sequence, let from, let target, let updates):
            byte(MessageKind.ping.rawValue)
            varint(UInt64(sequence))
            string(from)
            string(target)
            self.updates(updates)
        case .pingRequest(let sequence, let from, let target, let updates):
            byte(MessageKind.pingRequest.rawValue)
            varint(UInt64(sequence))
            string(from)
            member(target)
            self.updates(updates)
        case .ack(let sequence, let from, let updates), .nack(let sequence, let from, let updates):
            if case .ack = message { byte(MessageKind.ack.rawValue) } else { byte(MessageKind.nack.rawValue) }
            varint(UInt64(sequence))
            string(from)
            self.updates(updates)
        case .gossip(let from, let updates):
            byte(MessageKind.gossip.rawValue)
            string(from)
            self.updates(updates)
        case .sync(let from, let members, let state, let isReply):
            byte(MessageKind.sync.rawValue)
            member(from)
            varint(UInt64(members.count))
            for member in members { self.member(member) }
            updates(state)
            byte(isReply ? 1 : 0)
        case .fetch(let from, let keys):
            byte(MessageKind.fetch.rawValue)
            string(from)
            varint(UInt64(keys.count))
            for key in keys { string(key) }
        case .entries(let from, let updates):
            byte(MessageKind.entries.rawValue)
            string(from)
            self.updates(updates)
        }
    }

    private func statusCode(_ status: MemberStatus) -> UInt8 {
        switch status {
        case .alive: 0
        case .leaving: 1
        case .suspect: 2
        case .dead: 3
        case .left: 4
        }
    }
}

struct WireReader {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index == bytes.count }
    private var remaining: Int { bytes.count - index }

    mutating func byte() throws(WireError) -> UInt8 {
        guard index < bytes.count else { throw .truncated }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func varint() throws(WireError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let next = try byte()
            guard shift < 64 else { throw .tooLarge }
            value |= UInt64(next & 0x7f) << shift
            if next < 0x80 { return value }
            shift += 7
        }
    }

    mutating func fixed64() throws(WireError) -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 8) { value |= UInt64(try byte()) << UInt64(shift) }
        return value
    }

    /// A count of elements that each take at least one byte: never more than what is left.
    mutating func count() throws(WireError) -> Int {
        let value = try varint()
        guard value <= UInt64(remaining) else { throw .tooLarge }
        return Int(value)
    }

    mutating func string() throws(WireError) -> String {
        let length = try varint()
        guard length <= UInt64(remaining) else { throw .tooLarge }
        let slice = bytes[index..<index + Int(length)]
        index += Int(length)
        guard let text = String(validating: slice, as: UTF8.self) else { throw .badString }
        return text
    }

    mutating func optionalString() throws(WireError) -> String? {
        try byte() == 0 ? nil : try string()
    }

    mutating func member() throws(WireError) -> Member {
        let id = try string()
        let host = try string()
        let port = try varint()
        guard port <= 65535 else { throw .tooLarge }
        let region = try string()
        let incarnation = try varint()
        let status: MemberStatus
        switch try byte() {
        case 0: status = .alive
        case 1: status = .leaving
        case 2: status = .suspect
        case 3: status = .dead
        case 4: status = .left
        case let other: throw .unknownKind(other)
        }
        let apiURL = try optionalString()
        return Member(
            id: id, address: MemberAddress(host: host, port: Int(port)), region: region, incarnation: incarnation,
            status: status, apiURL: apiURL)
    }

    mutating func entry() throws(WireError) -> StateEntry {
        StateEntry(key: try string(), version: try varint(), writer: try string(), value: try string())
    }

    mutating func update() throws(WireError) -> GossipUpdate {
        switch UpdateKind(rawValue: try byte()) {
        case .member: return .member(try member(), accuser: try optionalString())
        case .state: return .state(try entry(), ageMillis: try varint())
        case .notice:
            return .notice(
                StateNotice(
                    key: try string(), version: try varint(), writer: try string(), digest: try fixed64(),
                    ageMillis: try varint(), urgent: try byte() == 1))
        case nil: throw .unknownKind(bytes[index - 1])
        }
    }

    mutating func updates() throws(WireError) -> [GossipUpdate] {
        var updates: [GossipUpdate] = []
        for _ in 0..<(try count()) { updates.append(try update()) }
        return updates
    }

    mutating func message() throws(WireError) -> GossipMessage {
        switch MessageKind(rawValue: try byte()) {
        case .ping:
            return .ping(sequence: try sequence(), from: try string(), target: try string(), updates: try updates())
        case .pingRequest:
            return .pingRequest(sequence: try sequence(), from: try string(), target: try member(), updates: try updates())
        case .ack:
            return .ack(sequence: try sequence(), from: try string(), updates: try updates())
        case .nack:
            return .nack(sequence: try sequence(), from: try string(), updates: try updates())
        case .gossip:
            return .gossip(from: try string(), updates: try updates())
        case .sync:
            let from = try member()
            var members: [Member] = []
            for _ in 0..<(try count()) { members.append(try member()) }
            return .sync(from: from, members: members, state: try updates(), isReply: try byte() == 1)
        case .fetch:
            let from = try string()
            var keys: [String] = []
            for _ in 0..<(try count()) { keys.append(try string()) }
            return .fetch(from: from, keys: keys)
        case .entries:
            return .entries(from: try string(), updates: try updates())
        case nil:
            throw .unknownKind(bytes[index - 1])
        }
    }

    private mutating func sequence() throws(WireError) -> UInt32 {
        let value = try varint()
        guard value <= UInt64(UInt32.max) else { throw .tooLarge }
        return UInt32(value)
    }
}
