import NIOCore

/// One server-sent event.
public struct SSEEvent: Sendable, Hashable {
    /// The `event:` field, when present (Anthropic names every event; OpenAI names none).
    public var event: String?
    /// The `data:` lines joined with newlines.
    public var data: String

    public init(event: String? = nil, data: String) {
        self.event = event
        self.data = data
    }
}

/// An incremental `text/event-stream` parser: feed it bytes as they arrive, take whole events.
///
/// Follows the WHATWG rules that matter here: lines end in LF, CRLF or CR; a blank line ends an
/// event; lines starting with `:` are comments (keep-alives) and are skipped; `data:` lines
/// accumulate. Partial lines wait for the next buffer.
public struct SSEParser: Sendable {
    private var pending: [UInt8] = []
    private var eventName: String?
    private var dataLines: [String] = []
    private var lastWasCR = false
    /// Bytes that were not a well-formed line so far; a cap guards against a body with no newlines.
    public static let maxLineLength = 16 * 1024 * 1024

    public init() {}

    /// Feeds bytes; returns every event they complete. Scans for line ends and copies whole lines:
    /// a line that arrived in one buffer is read in place, only a line split across buffers waits
    /// in `pending`.
    public mutating func feed(_ buffer: ByteBuffer) throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        buffer.withUnsafeReadableBytes { bytes in
            let count = bytes.count
            var index = 0
            if lastWasCR, count > 0 {
                lastWasCR = false
                if bytes[0] == Self.lf { index = 1 }  // the LF of a CRLF split across buffers
            }
            var lineStart = index
            guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
            while index < count {
                let byte = base[index]
                guard byte == Self.lf || byte == Self.cr else {
                    index += 1
                    continue
                }
                if let event = endLine(UnsafeRawBufferPointer(rebasing: bytes[lineStart..<index])) { events.append(event) }
                index += 1
                if byte == Self.cr {
                    if index == count {
                        lastWasCR = true
                    } else if base[index] == Self.lf {
                        index += 1
                    }
                }
                lineStart = index
            }
            if lineStart < count { pending.append(contentsOf: UnsafeBufferPointer(start: base + lineStart, count: count - lineStart)) }
        }
        guard pending.count <= SSEParser.maxLineLength else { throw SSEError.lineTooLong }
        return events
    }

    /// Ends the stream: returns an event that was complete except for its final blank line.
    public mutating func finish() -> SSEEvent? {
        if !pending.isEmpty { _ = endLine(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return dispatch()
    }

    private static let lf = UInt8(ascii: "\n")
    private static let cr = UInt8(ascii: "\r")
    private static let colon = UInt8(ascii: ":")

    /// Ends the line made of what is pending and `tail`.
    private mutating func endLine(_ tail: UnsafeRawBufferPointer) -> SSEEvent? {
        if pending.isEmpty { return take(line: tail) }
        var line: [UInt8] = []
        swap(&line, &pending)
        line.append(contentsOf: tail)
        let event = line.withUnsafeBytes { take(line: $0) }
        line.removeAll(keepingCapacity: true)
        pending = line
        return event
    }

    /// One line: a blank line dispatches the event, a comment is skipped, `data` and `event` are kept.
    private mutating func take(line: UnsafeRawBufferPointer) -> SSEEvent? {
        if line.isEmpty { return dispatch() }
        if line[0] == Self.colon { return nil }
        let colon = line.firstIndex(of: Self.colon) ?? line.count
        var valueStart = Swift.min(colon + 1, line.count)
        if valueStart < line.count && line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let field = line[..<colon]
        let value = UnsafeRawBufferPointer(rebasing: line[valueStart...])
        if field.elementsEqual("data".utf8) {
            dataLines.append(String(decoding: value, as: UTF8.self))
        } else if field.elementsEqual("event".utf8) {
            eventName = String(decoding: value, as: UTF8.self)
        }
        return nil
    }

    private mutating func dispatch() -> SSEEvent? {
        defer {
            eventName = nil
            dataLines.removeAll()
        }
        guard !dataLines.isEmpty else { return nil }
        return SSEEvent(event: eventName, data: dataLines.count == 1 ? dataLines[0] : dataLines.joined(separator: "\n"))
    }
}

public enum SSEError: Error { case lineTooLong }
