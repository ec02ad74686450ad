import ArgumentParser
import Foundation
import Logging
import NIOConcurrencyHelpers
import SignalboxCore

/// How `serve` writes its log.
enum LogFormat: String, CaseIterable, ExpressibleByArgument {
    /// swift-log's lines, for a person at a terminal.
    case text
    /// One JSON object per line on stdout, for log shippers: every line the process writes,
    /// the banner and start-up errors included.
    case json
}

/// A swift-log handler that writes each record as one JSON object on one line of stdout:
/// `{"time", "level", "logger", "message", "source", …metadata}`. Lines are written whole, under a
/// lock, straight to the file descriptor (no buffer to lose on a crash, no interleaving).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    static let output = NIOLockedValueBox(())

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(
        level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        var fields = self.metadata
        if let explicit { fields.merge(explicit) { _, new in new } }
        var object = JSONObject([
            ("time", .string(Self.timestamp())), ("level", .string(level.rawValue)), ("logger", .string(label)),
            ("message", .string(message.description)), ("source", .string(source)),
        ])
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) where object[key] == nil { object[key] = Self.json(value) }
        Self.write(.object(object))
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let values): .array(values.map(json))
        case .dictionary(let values): .object(JSONObject(values.sorted { $0.key < $1.key }.map { ($0.key, json($0.value)) }))
        }
    }

    /// `2026-12-01T07:42:20.833Z`, from `gmtime_r`: no formatter made per line.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let millis = now.tv_nsec / 1_000_000
        let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):"
            + "\(two(parts.tm_sec)).\(fraction)Z"
    }

    /// One line to stdout, whole.
    static func write(_ value: JSONValue) {
        var bytes = JSONWriter.bytes(value)
        bytes.append(UInt8(ascii: "\n"))
        output.withLockedValue { _ in
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = Foundation.write(1, buffer.baseAddress! + offset, buffer.count - offset)
                    if written <= 0 { return }
                    offset += written
                }
            }
        }
    }
}
