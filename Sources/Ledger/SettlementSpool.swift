import Foundation

/// A local, append-only file of settlements the ledger could not take yet (PostgreSQL down).
///
/// Each append is one JSON line per settlement, written and `fsync`ed before the request that
/// produced it is answered, so a charge survives the node crashing right after. Settlements
/// are idempotent in the ledger (by generation id), so replaying a line that did land is harmless.
public actor SettlementSpool {
    public let path: String
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    /// Opens (creating if needed) the spool at `path`.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw LedgerError.storage("cannot create the settlement spool at \(path)")
            }
        }
        encoder.outputFormatting = [.sortedKeys]
    }

    /// Appends settlements and flushes them to disk.
    public func append(_ settlements: [Settlement]) throws {
        var data = Data()
        for settlement in settlements {
            data.append(try encoder.encode(settlement))
            data.append(UInt8(ascii: "\n"))
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
        try handle.synchronize()
    }

    /// Every spooled settlement, oldest first. A torn last line (a crash mid-write, before its
    /// request was answered) is skipped.
    public func pending() throws -> [Settlement] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.split(separator: UInt8(ascii: "\n")).compactMap { try? decoder.decode(Settlement.self, from: $0) }
    }

    public var count: Int { (try? pending().count) ?? 0 }

    /// Drops the first `count` settlements (they reached the ledger), atomically.
    public func removeFirst(_ count: Int) throws {
        let rest = Array(try pending().dropFirst(count))
        let temporary = path + ".tmp"
        var data = Data()
        for settlement in rest {
            data.append(try encoder.encode(settlement))
            data.append(UInt8(ascii: "\n"))
        }
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw LedgerError.storage("cannot write \(temporary)")
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
        try handle.synchronize()
        try handle.close()
        guard rename(temporary, path) == 0 else { throw LedgerError.storage("cannot replace \(path)") }
    }
}
