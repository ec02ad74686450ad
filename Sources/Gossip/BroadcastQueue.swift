/// Updates waiting to be piggybacked, visited in priority order: by group (membership before
/// state), then fewest transmissions first, then newest first — without sorting the queue for
/// every datagram (memberlist keeps a B-tree for the same reason).
///
/// Entries sit in one list per (group, transmissions), oldest first; a re-queued or re-sent key
/// leaves a stale slot behind, skipped when met and swept out when they pile up.
struct BroadcastQueue<Item: Sendable>: Sendable {
    private struct Entry: Sendable {
        var item: Item
        var group: Int
        var transmits: Int
        var order: UInt64
    }

    private struct Slot: Sendable {
        var key: String
        var order: UInt64
    }

    /// What a visit decides about one entry.
    enum Decision { case take, skip, stop }

    private let groups: Int
    private var entries: [String: Entry] = [:]
    private var levels: [[[Slot]]]
    private var nextOrder: UInt64 = 0
    private var slots = 0

    init(groups: Int) {
        self.groups = groups
        levels = Array(repeating: [], count: groups)
    }

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }

    func contains(_ key: String) -> Bool { entries[key] != nil }

    /// Queues `item` under `key` (replacing what was queued under it) with no transmissions yet.
    mutating func enqueue(_ item: Item, key: String, group: Int) {
        nextOrder += 1
        entries[key] = Entry(item: item, group: group, transmits: 0, order: nextOrder)
        place(key: key, group: group, level: 0, order: nextOrder)
    }

    mutating func remove(_ key: String) {
        entries[key] = nil
    }

    /// Visits entries in priority order until `decide` says stop; when `counting`, each taken entry
    /// counts one transmission and leaves the queue after `limit`.
    mutating func visit(limit: Int, counting: Bool = true, _ decide: (String, Item) -> Decision) {
        var taken: [String] = []
        var staleSeen = 0
        visiting: for group in 0..<groups {
            for level in levels[group].indices {
                for slot in levels[group][level].reversed() {
                    guard let entry = entries[slot.key], entry.order == slot.order, entry.transmits == level else {
                        staleSeen += 1
                        continue
                    }
                    switch decide(slot.key, entry.item) {
                    case .take: if counting { taken.append(slot.key) }
                    case .skip: continue
                    case .stop: break visiting
                    }
                }
            }
        }
        for key in taken {
            guard var entry = entries[key] else { continue }
            entry.transmits += 1
            if entry.transmits >= limit {
                entries[key] = nil
            } else {
                entries[key] = entry
                place(key: key, group: entry.group, level: entry.transmits, order: entry.order)
            }
        }
        // Sweep when stale slots cost this visit more than a few lookups, or pile up.
        if staleSeen > 16 || slots > 4 * entries.count + 256 { compact() }
    }

    private mutating func place(key: String, group: Int, level: Int, order: UInt64) {
        while levels[group].count <= level { levels[group].append([]) }
        levels[group][level].append(Slot(key: key, order: order))
        slots += 1
    }

    /// Drops stale slots, keeping each list's order (oldest first).
    private mutating func compact() {
        slots = 0
        for group in levels.indices {
            for level in levels[group].indices {
                levels[group][level].removeAll { slot in
                    guard let entry = entries[slot.key] else { return true }
                    return entry.order != slot.order || entry.transmits != level
                }
                slots += levels[group][level].count
            }
        }
    }
}
