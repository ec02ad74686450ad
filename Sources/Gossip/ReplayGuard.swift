/// Drops replayed and stale frames, per sender (a pure value; the shell holds one for UDP and one
/// for TCP).
///
/// Every frame carries the sender's epoch (its boot incarnation), a sequence that rises with each
/// frame it sends in that life, and its wall-clock send time. A receiver keeps, per sender, the
/// newest epoch, the highest sequence with a bitmap of the 1,024 below it, and the sender's clock
/// offset learnt from its newest frame. It drops:
/// - frames of an earlier epoch (a capture from a previous life);
/// - a sequence already seen, or older than the bitmap (`replayed`);
/// - frames older than `window` by the sender's own clock (`stale`). Ages are judged against the
///   sender's clock through the learnt offset, so a node whose clock is minutes off is not cut off;
///   after three consecutive new frames judged stale the offset is learnt again (the sender's clock
///   stepped).
public struct ReplayGuard: Sendable {
    public enum Verdict: Sendable, Hashable { case accept, replayed, stale }

    private struct Sender: Sendable {
        var epoch: UInt64
        var highest: UInt64
        /// Bit i set: sequence `highest - i` was seen.
        var seen: [UInt64]
        var newestSentAt: UInt64
        /// Receiver's clock minus sender's, in milliseconds, at the newest frame.
        var offset: Int64
        var staleStreak = 0
        var lastUsed: UInt64
    }

    public let windowMillis: UInt64
    public let maxSenders: Int
    private static let words = 16
    private var senders: [String: Sender] = [:]
    private var uses: UInt64 = 0

    public init(windowMillis: UInt64 = 30_000, maxSenders: Int = 4096) {
        self.windowMillis = windowMillis
        self.maxSenders = maxSenders
    }

    /// The sender's clock offset (receiver minus sender, milliseconds) learnt from its newest frame.
    public func clockOffset(of sender: String) -> Int64? { senders[sender]?.offset }

    public mutating func check(
        sender id: String, epoch: UInt64, sequence: UInt64, sentAtMillis: UInt64,
        receivedAtMillis: UInt64
    ) -> Verdict {
        uses += 1
        let offset = Int64(bitPattern: receivedAtMillis &- sentAtMillis)
        guard var sender = senders[id], epoch <= sender.epoch else {
            if senders[id] == nil && senders.count >= maxSenders { evictOldest() }
            var seen = [UInt64](repeating: 0, count: Self.words)
            seen[0] = 1
            senders[id] = Sender(epoch: epoch, highest: sequence, seen: seen, newestSentAt: sentAtMillis, offset: offset, lastUsed: uses)
            return .accept
        }
        guard epoch == sender.epoch else { return .stale }
        sender.lastUsed = uses
        defer { senders[id] = sender }
        if sequence > sender.highest {
            // New: judged by the sender's clock as this receiver estimates it now.
            let senderNow = Int64(bitPattern: receivedAtMillis) - sender.offset
            if senderNow - Int64(bitPattern: sentAtMillis) > Int64(windowMillis) {
                sender.staleStreak += 1
                guard sender.staleStreak >= 3 else { return .stale }
            }
            sender.staleStreak = 0
            shift(&sender.seen, by: sequence - sender.highest)
            sender.seen[0] |= 1
            sender.highest = sequence
            sender.newestSentAt = sentAtMillis
            sender.offset = offset
            return .accept
        }
        let distance = sender.highest - sequence
        guard distance < UInt64(Self.words * 64) else { return .replayed }
        let word = Int(distance / 64), bit = UInt64(1) << (distance % 64)
        if sender.seen[word] & bit != 0 { return .replayed }
        // Reordered: older than the newest frame, judged by the sender's own timestamps.
        if sender.newestSentAt > sentAtMillis && sender.newestSentAt - sentAtMillis > windowMillis { return .stale }
        sender.seen[word] |= bit
        return .accept
    }

    /// Forgets a sender (reaped from the cluster).
    public mutating func forget(_ sender: String) { senders[sender] = nil }

    private mutating func evictOldest() {
        if let oldest = senders.min(by: { $0.value.lastUsed < $1.value.lastUsed })?.key { senders[oldest] = nil }
    }

    /// Moves the bitmap `count` places toward older sequences.
    private func shift(_ seen: inout [UInt64], by count: UInt64) {
        guard count < UInt64(Self.words * 64) else {
            seen = [UInt64](repeating: 0, count: Self.words)
            return
        }
        let wordShift = Int(count / 64), bitShift = UInt64(count % 64)
        for index in stride(from: Self.words - 1, through: 0, by: -1) {
            let source = index - wordShift
            var value: UInt64 = source >= 0 ? seen[source] << bitShift : 0
            if bitShift > 0 && source - 1 >= 0 { value |= seen[source - 1] >> (64 - bitShift) }
            seen[index] = value
        }
    }
}
