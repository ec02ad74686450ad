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

    /// Feeds bytes; returns every event they complete.
    public mutating func feed(_ buffer: ByteBuffer) throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        buffer.withUnsafeReadableBytes { bytes in
            for byte in bytes {
                if lastWasCR {
                    lastWasCR = false
                    if byte == UInt8(ascii: "\n") { continue }
                }
                if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                    lastWasCR = byte == UInt8(ascii: "\r")
                    if let event = endLine() { events.append(event) }
                } else {
                    pending.append(byte)
                }
            }
        }
        guard pending.count <= SSEParser.maxLineLength else { throw SSEError.lineTooLong }
        return events
    }

    /// Ends the stream: returns an event that was complete except for its final blank line.
    public mutating func finish() -> SSEEvent? {
        if !pending.isEmpty { _ = endLine() }
        return dispatch()
    }

    private mutating func endLine() -> SSEEvent? {
        defer { pending.removeAll(keepingCapacity: true) }
        if pending.isEmpty { return dispatch() }
        if pending.first == UInt8(ascii: ":") { return nil }
        let line = String(decoding: pending, as: UTF8.self)
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = line[...]
            value = ""
        }
        switch field {
        case "data": dataLines.append(String(value))
        case "event": eventName = String(value)
        default: break
        }
        return nil
    }

    private mutating func dispatch() -> SSEEvent? {
        defer {
            eventName = nil
            dataLines.removeAll()
        }
        guard !dataLines.isEmpty else { return nil }
        return SSEEvent(event: eventName, data: dataLines.joined(separator: "\n"))
    }
}

public enum SSEError: Error { case lineTooLong }
