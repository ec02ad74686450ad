import Foundation

/// A local, append-only file of settlements the ledger could not take yet (PostgreSQL down).
///
/// Each settlement is one framed record — `SBS1`, its length and CRC-32C (both 32-bit little
/// endian), then its JSON — written and `fsync`ed before the request that produced it is
/// answered, so a charge survives the node crashing right after. On open the file is scanned:
/// a torn tail (a crash mid-write) is cut off, and a damaged record in the middle is skipped by
/// finding the next valid one, so no later record is lost. Replay reads forward from a
/// checkpointed offset (`<path>.offset`, written atomically), so it never rewrites the file;
/// once everything is replayed the file is emptied. Settlements are idempotent in the ledger (by
/// generation id), so replaying a record that did land is harmless.
public actor SettlementSpool {
    public typealias Record = SpoolFile.Record
    public typealias Recovery = SpoolFile.Recovery

    public nonisolated let path: String
    private var file: SpoolFile
    private nonisolated let descriptor: Int32

    /// Opens (creating if needed) the spool at `path`, cutting a torn tail.
    public init(path: String) throws {
        self.path = path
        let file = try SpoolFile(path: path)
        self.file = file
        descriptor = file.descriptor
    }

    deinit { close(descriptor) }

    /// What opening the file found.
    public var recovery: Recovery { file.recovery }
    /// Pending records (after the checkpoint).
    public var count: Int { file.count }
    /// When the oldest pending record was spooled.
    public var oldest: Date? { file.oldest }

    /// Appends settlements and flushes them to disk. A failed write leaves the file as it was.
    public func append(_ settlements: [Settlement], reason: String? = nil) throws { try file.append(settlements, reason: reason) }

    /// Up to `limit` records after the checkpoint, oldest first.
    public func next(_ limit: Int) throws -> [Record] { try file.next(limit) }

    /// Marks everything up to the end of `record` as replayed (`replayed` records since the
    /// last checkpoint). Once nothing is left, the file is emptied.
    public func advance(past record: Record, replayed: Int) throws { try file.advance(past: record, replayed: replayed) }

    /// Every pending settlement, oldest first (for tests and operators).
    public func pending() throws -> [Settlement] { try file.next(Int.max).map(\.settlement) }

    /// Every pending record with its reason (the reject file's contents).
    public func pendingRecords() throws -> [Record] { try file.next(Int.max) }
}

/// The spool's file and its framing; `SettlementSpool` serializes access to it.
public struct SpoolFile {
    /// One spooled settlement, as read back.
    public struct Record: Sendable {
        public var settlement: Settlement
        /// Why it is here, for the reject file (the ledger's refusal).
        public var reason: String?
        public var spooledAt: Date
        /// Where the next record starts: the checkpoint once this one is replayed.
        var end: Int
    }

    /// What opening the file found.
    public struct Recovery: Sendable, Hashable {
        /// Bytes of a torn last record that were cut off.
        public var truncatedBytes = 0
        /// Damaged records skipped in the middle of the file.
        public var corruptRecords = 0
        /// Records of the pre-framing format (one JSON line each) converted on open.
        public var convertedLegacyRecords = 0
    }

    static let magic: [UInt8] = Array("SBS1".utf8)
    public static let headerSize = 12
    /// The largest record accepted: a settlement carries at most an idempotent response.
    static let maximumRecord = 64 << 20

    public let path: String
    public private(set) var recovery = Recovery()
    let descriptor: Int32
    private var checkpoint: Int
    private var size: Int
    /// Pending records (after the checkpoint) and the time the oldest was spooled.
    public private(set) var count = 0
    public private(set) var oldest: Date?
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw LedgerError.storage("cannot open the settlement spool at \(path): \(Self.errno())") }
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .millisecondsSince1970
        decoder.dateDecodingStrategy = .millisecondsSince1970
        size = Int(lseek(descriptor, 0, SEEK_END))
        checkpoint = Self.readCheckpoint(path + ".offset")
        if checkpoint > size { checkpoint = 0 }
        try convertLegacyFormat()
        try scan()
    }

    static func errno() -> String { String(cString: strerror(Glibc.errno)) }

    mutating func append(_ settlements: [Settlement], reason: String? = nil) throws {
        guard !settlements.isEmpty else { return }
        var bytes: [UInt8] = []
        let now = Date()
        for settlement in settlements {
            let payload = Array(try encoder.encode(Envelope(settlement: settlement, reason: reason, spooledAt: now)))
            guard payload.count <= Self.maximumRecord else { throw LedgerError.storage("a settlement record is too large to spool") }
            bytes += Self.frame(payload)
        }
        let start = size
        let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(start)) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            let error = Self.errno()
            _ = ftruncate(descriptor, off_t(start))
            throw LedgerError.storage("cannot write the settlement spool at \(path): \(error)")
        }
        size += bytes.count
        count += settlements.count
        if oldest == nil { oldest = now }
    }

    func next(_ limit: Int) throws -> [Record] {
        var records: [Record] = []
        var offset = checkpoint
        while records.count < limit, offset < size {
            switch read(at: offset) {
            case .record(let record):
                records.append(record)
                offset = record.end
            case .damaged, .end:
                // Skipped at open (a length past the end is damage too when valid records follow).
                guard let next = resynchronize(from: offset + 1) else { return records }
                offset = next
            }
        }
        return records
    }

    mutating func advance(past record: Record, replayed: Int) throws {
        count = max(0, count - replayed)
        if record.end >= size {
            // The checkpoint goes back to zero before the file is emptied: a crash in between
            // replays records that already landed (harmless), never skips new ones.
            try Self.writeCheckpoint(0, to: path + ".offset")
            guard ftruncate(descriptor, 0) == 0, fsync(descriptor) == 0 else {
                throw LedgerError.storage("cannot empty the settlement spool at \(path): \(Self.errno())")
            }
            size = 0
            checkpoint = 0
            count = 0
            oldest = nil
        } else {
            checkpoint = record.end
            try Self.writeCheckpoint(checkpoint, to: path + ".offset")
            oldest = try next(1).first?.spooledAt
        }
    }

    // MARK: Framing

    struct Envelope: Codable {
        var settlement: Settlement
        var reason: String?
        var spooledAt: Date
    }

    /// Where each well-formed header starts in `bytes` (for tests and diagnostics).
    public static func recordStarts(_ bytes: [UInt8]) -> [Int] {
        var starts: [Int] = []
        var offset = 0
        while offset + headerSize <= bytes.count, Array(bytes[offset..<offset + 4]) == magic {
            starts.append(offset)
            let length = Int(bytes[offset + 4]) | Int(bytes[offset + 5]) << 8 | Int(bytes[offset + 6]) << 16 | Int(bytes[offset + 7]) << 24
            offset += headerSize + length
        }
        return starts
    }

    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var bytes = magic
        bytes += littleEndian(UInt32(payload.count))
        bytes += littleEndian(CRC32C.checksum(payload))
        bytes += payload
        return bytes
    }

    static func littleEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)]
    }

    enum ReadResult {
        case record(Record)
        /// Not a valid record here (bad magic, length, checksum or JSON).
        case damaged
        /// Fewer bytes left than the record claims: a torn tail.
        case end
    }

    private func bytes(at offset: Int, count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        let read = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, off_t(offset)) }
        return read == count ? buffer : nil
    }

    private func read(at offset: Int) -> ReadResult {
        guard offset + Self.headerSize <= size, let header = bytes(at: offset, count: Self.headerSize) else { return .end }
        guard Array(header[0..<4]) == Self.magic else { return .damaged }
        let length = Int(header[4]) | Int(header[5]) << 8 | Int(header[6]) << 16 | Int(header[7]) << 24
        let checksum = UInt32(header[8]) | UInt32(header[9]) << 8 | UInt32(header[10]) << 16 | UInt32(header[11]) << 24
        guard length <= Self.maximumRecord else { return .damaged }
        let end = offset + Self.headerSize + length
        guard end <= size, let payload = bytes(at: offset + Self.headerSize, count: length) else { return .end }
        guard CRC32C.checksum(payload) == checksum,
            let envelope = try? decoder.decode(Envelope.self, from: Data(payload))
        else { return .damaged }
        return .record(Record(settlement: envelope.settlement, reason: envelope.reason, spooledAt: envelope.spooledAt, end: end))
    }

    /// The offset of the next valid record at or after `offset`, nil when there is none.
    private func resynchronize(from offset: Int) -> Int? {
        var position = offset
        let window = 1 << 16
        while position + Self.headerSize <= size {
            guard let chunk = bytes(at: position, count: min(window, size - position)) else { return nil }
            var index = 0
            while index + 4 <= chunk.count {
                if chunk[index] == Self.magic[0], chunk[index + 1] == Self.magic[1], chunk[index + 2] == Self.magic[2],
                    chunk[index + 3] == Self.magic[3], case .record = read(at: position + index)
                {
                    return position + index
                }
                index += 1
            }
            position += max(1, chunk.count - 3)
        }
        return nil
    }

    /// Counts pending records, skips damaged ones and cuts a torn tail.
    private mutating func scan() throws {
        var offset = checkpoint
        var lastGood = checkpoint
        while offset < size {
            switch read(at: offset) {
            case .record(let record):
                count += 1
                if oldest == nil { oldest = record.spooledAt }
                offset = record.end
                lastGood = offset
            case .damaged, .end:
                // A record running past the end of the file is a torn tail only if nothing valid
                // follows it; otherwise its length was damaged, and the records after it are kept.
                guard let next = resynchronize(from: offset + 1) else {
                    offset = size
                    continue
                }
                recovery.corruptRecords += 1
                offset = next
            }
        }
        if lastGood < size {
            // Nothing valid after the last good record: a write the crash tore. Its request was
            // never answered, so cutting it loses no acknowledged charge.
            recovery.truncatedBytes = size - lastGood
            guard ftruncate(descriptor, off_t(lastGood)) == 0, fsync(descriptor) == 0 else {
                throw LedgerError.storage("cannot cut the torn tail of \(path): \(Self.errno())")
            }
            size = lastGood
        }
    }

    /// A spool from before records were framed holds one JSON settlement per line: rewrite it.
    private mutating func convertLegacyFormat() throws {
        guard size > 0, checkpoint == 0, let first = bytes(at: 0, count: min(4, size)), first != Self.magic,
            first.first == UInt8(ascii: "{"), let data = bytes(at: 0, count: size)
        else { return }
        let legacyDecoder = JSONDecoder()
        let settlements = data.split(separator: UInt8(ascii: "\n")).compactMap {
            try? legacyDecoder.decode(Settlement.self, from: Data($0))
        }
        guard ftruncate(descriptor, 0) == 0 else { throw LedgerError.storage("cannot convert \(path): \(Self.errno())") }
        size = 0
        try append(settlements)
        count = 0
        oldest = nil
        recovery.convertedLegacyRecords = settlements.count
    }

    static func readCheckpoint(_ path: String) -> Int {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), value >= 0
        else { return 0 }
        return value
    }

    static func writeCheckpoint(_ offset: Int, to path: String) throws {
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw LedgerError.storage("cannot write \(temporary): \(errno())") }
        let bytes = Array(String(offset).utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            throw LedgerError.storage("cannot write the spool checkpoint \(path): \(errno())")
        }
    }
}

/// CRC-32C (Castagnoli), the checksum of spool records.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xff)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
