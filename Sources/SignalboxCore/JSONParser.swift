import Foundation

/// A JSON text that could not be read, with the byte offset where reading stopped.
public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    public var offset: Int
    public var reason: String
    public var description: String { "invalid JSON at byte \(offset): \(reason)" }
}

/// Reads JSON text straight into `JSONValue`s.
///
/// Every request body and every upstream stream chunk is parsed on the hot path; going through
/// `Codable` costs a thrown error per type probe, so this is a plain recursive-descent reader.
/// Object keys keep their document order; integers that fit `Int64` stay exact.
public enum JSONParser {
    public static let maxDepth = 512

    public static func parse(_ bytes: some Collection<UInt8>) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError> =
            bytes.withContiguousStorageIfAvailable { buffer in
                parse(buffer: UnsafeRawBufferPointer(buffer))
            } ?? Array(bytes).withUnsafeBytes { parse(buffer: $0) }
        return try result.get()
    }

    /// The same, for bytes already in memory: no generic dispatch, which costs more than parsing
    /// a short value.
    public static func parse(_ buffer: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        try parse(buffer: buffer).get()
    }

    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        var copy = text
        let result = copy.withUTF8 { parse(buffer: UnsafeRawBufferPointer($0)) }
        return try result.get()
    }

    public static func parse(_ data: Data) throws(JSONParseError) -> JSONValue {
        let result = data.withUnsafeBytes { parse(buffer: $0) }
        return try result.get()
    }

    /// Parses with numbers that are not integers kept as their text (`.decimal`), for values
    /// that are money: `0.1` stays one tenth, not the nearest binary fraction.
    public static func parseExact(_ buffer: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        try parse(buffer: buffer, exactNumbers: true).get()
    }

    static func parse(buffer: UnsafeRawBufferPointer, exactNumbers: Bool = false) -> Result<JSONValue, JSONParseError> {
        var reader = Reader(bytes: buffer, exactNumbers: exactNumbers)
        do throws(JSONParseError) {
            reader.skipWhitespace()
            let value = try reader.value(depth: 0)
            reader.skipWhitespace()
            guard reader.index == buffer.count else { throw reader.fail("unexpected data after the value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    struct Reader {
        let bytes: UnsafeRawBufferPointer
        /// Numbers with a fraction or exponent become `.decimal(text)` instead of `.double`.
        var exactNumbers = false
        var index = 0

        func fail(_ reason: String) -> JSONParseError { JSONParseError(offset: index, reason: reason) }

        var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x0A, 0x0D, 0x09: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ literal: StaticString, _ value: JSONValue) throws(JSONParseError) -> JSONValue {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw fail("truncated literal") }
            for offset in 0..<count where bytes[index + offset] != literal.utf8Start[offset] {
                throw fail("unknown literal")
            }
            index += count
            return value
        }

        mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
            guard depth < JSONParser.maxDepth else { throw fail("nested too deeply") }
            guard let byte = peek else { throw fail("unexpected end of input") }
            switch byte {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw fail("unexpected character")
            }
        }

        mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
            index += 1
            var entries: [(String, JSONValue)] = []
            skipWhitespace()
            if peek == UInt8(ascii: "}") {
                index += 1
                return .object(JSONObject())
            }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw fail("expected an object key") }
                let key = try string()
                skipWhitespace()
                guard peek == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                skipWhitespace()
                let element = try value(depth: depth + 1)
                if let existing = entries.firstIndex(where: { $0.0 == key }) {
                    entries[existing].1 = element
                } else {
                    entries.append((key, element))
                }
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ",")?: index += 1
                case UInt8(ascii: "}")?:
                    index += 1
                    return .object(JSONObject(entries))
                default: throw fail("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") {
                index += 1
                return .array([])
            }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ",")?: index += 1
                case UInt8(ascii: "]")?:
                    index += 1
                    return .array(items)
                default: throw fail("expected ',' or ']'")
                }
            }
        }

        mutating func string() throws(JSONParseError) -> String {
            index += 1
            let start = index
            // Fast path: no escapes.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw fail("control character in string") }
                index += 1
            }
            var scalars = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: scalars, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let escape = peek else { throw fail("truncated escape") }
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""): scalars.append(0x22)
                    case UInt8(ascii: "\\"): scalars.append(0x5C)
                    case UInt8(ascii: "/"): scalars.append(0x2F)
                    case UInt8(ascii: "b"): scalars.append(0x08)
                    case UInt8(ascii: "f"): scalars.append(0x0C)
                    case UInt8(ascii: "n"): scalars.append(0x0A)
                    case UInt8(ascii: "r"): scalars.append(0x0D)
                    case UInt8(ascii: "t"): scalars.append(0x09)
                    case UInt8(ascii: "u"):
                        var code = try hex4()
                        if (0xD800..<0xDC00).contains(code) {
                            guard index + 6 <= bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw fail("unpaired surrogate")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid surrogate pair") }
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let scalar = Unicode.Scalar(code) else { throw fail("invalid unicode escape") }
                        scalars.append(contentsOf: UTF8.encode(scalar)!)
                    default: throw fail("invalid escape")
                    }
                default:
                    if byte < 0x20 { throw fail("control character in string") }
                    scalars.append(byte)
                }
            }
            throw fail("unterminated string")
        }

        mutating func hex4() throws(JSONParseError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("truncated unicode escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw fail("invalid unicode escape")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        mutating func number() throws(JSONParseError) -> JSONValue {
            let start = index
            var integral = true
            if peek == UInt8(ascii: "-") { index += 1 }
            guard let first = peek, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else { throw fail("invalid number") }
            if first == UInt8(ascii: "0") {
                index += 1
            } else {
                while let digit = peek, digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") { index += 1 }
            }
            if peek == UInt8(ascii: ".") {
                integral = false
                index += 1
                var digits = 0
                while let digit = peek, digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") {
                    index += 1
                    digits += 1
                }
                guard digits > 0 else { throw fail("invalid number") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                integral = false
                index += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
                var digits = 0
                while let digit = peek, digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") {
                    index += 1
                    digits += 1
                }
                guard digits > 0 else { throw fail("invalid number") }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if integral, let value = Int64(text) { return .int(value) }
            if exactNumbers { return .decimal(text) }
            guard let value = Double(text) else { throw fail("invalid number") }
            return .double(value)
        }
    }
}
