/// Finds where JSON values start and end without building them: the members of an object, the
/// elements of an array, the bytes of a value. For a relay that copies most of a document as it
/// came and reads only a few fields, this costs a pass over the bytes and no allocation.
///
/// Structure is checked as values are skipped (balanced brackets, terminated strings with valid
/// escapes, numbers and literals of the JSON grammar), so a span it returns is valid JSON; UTF-8
/// is not checked. Nesting deeper than `JSONParser.maxDepth` is refused.
public struct JSONScanner {
    public let bytes: UnsafeRawBufferPointer

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Not JSON (or not what the caller accepts), at `offset`.
    public struct Invalid: Error, Sendable {
        public var offset: Int
        public init(offset: Int) { self.offset = offset }
    }

    /// The whole text as one value (whitespace around it allowed).
    public func document() throws(Invalid) -> Range<Int> {
        let start = skipWhitespace(from: 0)
        let end = try skipValue(at: start, depth: 0)
        guard skipWhitespace(from: end) == bytes.count else { throw Invalid(offset: end) }
        return start..<end
    }

    /// Reads the object starting at `start` in one pass: `body` gets each member's key (its
    /// bytes between the quotes, and whether it has escapes) and where its value starts, and
    /// returns where that value ends — by reading into it (`scanObject`, `scanArray`) or with
    /// `skipValue`. Returns the end of the object. `depth` is the object's own nesting depth.
    public func scanObject(
        at start: Int, depth: Int, _ body: (_ key: Range<Int>, _ keyHasEscapes: Bool, _ valueStart: Int) throws(Invalid) -> Int
    ) throws(Invalid) -> Int {
        guard depth < JSONParser.maxDepth, start < bytes.count, bytes[start] == UInt8(ascii: "{") else { throw Invalid(offset: start) }
        var index = skipWhitespace(from: start + 1)
        if index < bytes.count && bytes[index] == UInt8(ascii: "}") { return index + 1 }
        while true {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw Invalid(offset: index) }
            let (keyEnd, escaped) = try skipString(at: index)
            let key = (index + 1)..<(keyEnd - 1)
            index = skipWhitespace(from: keyEnd)
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw Invalid(offset: index) }
            index = skipWhitespace(from: try body(key, escaped, skipWhitespace(from: index + 1)))
            guard index < bytes.count else { throw Invalid(offset: index) }
            if bytes[index] == UInt8(ascii: "}") { return index + 1 }
            guard bytes[index] == UInt8(ascii: ",") else { throw Invalid(offset: index) }
            index = skipWhitespace(from: index + 1)
        }
    }

    /// Reads the array starting at `start` in one pass, as `scanObject` does: `body` gets where
    /// each element starts and returns where it ends. Returns the end of the array.
    public func scanArray(at start: Int, depth: Int, _ body: (_ elementStart: Int) throws(Invalid) -> Int) throws(Invalid) -> Int {
        guard depth < JSONParser.maxDepth, start < bytes.count, bytes[start] == UInt8(ascii: "[") else { throw Invalid(offset: start) }
        var index = skipWhitespace(from: start + 1)
        if index < bytes.count && bytes[index] == UInt8(ascii: "]") { return index + 1 }
        while true {
            index = skipWhitespace(from: try body(index))
            guard index < bytes.count else { throw Invalid(offset: index) }
            if bytes[index] == UInt8(ascii: "]") { return index + 1 }
            guard bytes[index] == UInt8(ascii: ",") else { throw Invalid(offset: index) }
            index = skipWhitespace(from: index + 1)
        }
    }

    /// True when `range` holds exactly the ASCII text `literal`.
    @inlinable
    public func equals(_ range: Range<Int>, _ literal: StaticString) -> Bool {
        guard range.count == literal.utf8CodeUnitCount else { return false }
        let pointer = literal.utf8Start
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != pointer[offset] { return false }
        return true
    }

    /// True when the key at `key` (its bytes between the quotes, as `scanObject` gives them)
    /// reads `literal` once its escapes, if any, are decoded.
    public func key(_ key: Range<Int>, escaped: Bool, is literal: StaticString) -> Bool {
        guard escaped else { return equals(key, literal) }
        guard let text = string((key.lowerBound - 1)..<(key.upperBound + 1)) else { return false }
        return text.utf8.elementsEqual(UnsafeBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// True when the key at `key` (as `scanObject` gives it) has no upper-case letters, no
    /// escapes and no bytes outside ASCII: the spelling of every field name a client should send.
    public func isLowercaseASCII(_ key: Range<Int>) -> Bool {
        for index in key {
            let byte = bytes[index]
            if byte >= 0x80 || byte == UInt8(ascii: "\\") || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) { return false }
        }
        return true
    }

    /// The first byte of a value: `"`, `{`, `[`, `n` (null), `t`/`f`, or a number's first byte.
    @inlinable public func kind(of range: Range<Int>) -> UInt8 { bytes[range.lowerBound] }

    /// The first byte of the value starting at `start` (as `kind(of:)`); 0 past the end.
    @inlinable public func kind(at start: Int) -> UInt8 { start < bytes.count ? bytes[start] : 0 }

    /// The text of a string value without escapes (nil for another kind, or one with escapes).
    public func plainString(_ range: Range<Int>) -> String? {
        guard kind(of: range) == UInt8(ascii: "\"") else { return nil }
        let inner = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound + 1)..<(range.upperBound - 1)])
        guard !inner.contains(UInt8(ascii: "\\")) else { return nil }
        return String(decoding: inner, as: UTF8.self)
    }

    /// The text of a string value, escapes decoded (nil for another kind).
    public func string(_ range: Range<Int>) -> String? {
        if let plain = plainString(range) { return plain }
        guard kind(of: range) == UInt8(ascii: "\"") else { return nil }
        return try? JSONParser.parse(buffer: UnsafeRawBufferPointer(rebasing: bytes[range])).get().stringValue
    }

    /// The value at `range` as a `JSONValue`: for the small parts of a document worth building.
    public func value(_ range: Range<Int>) -> JSONValue {
        (try? JSONParser.parse(buffer: UnsafeRawBufferPointer(rebasing: bytes[range])).get()) ?? .null
    }

    /// As `value(_:)`, with numbers that are not integers kept as their text (`.decimal`): for money.
    public func exactValue(_ range: Range<Int>) -> JSONValue {
        (try? JSONParser.parse(buffer: UnsafeRawBufferPointer(rebasing: bytes[range]), exactNumbers: true).get()) ?? .null
    }

    /// The number at `range` as an `Int` when it is one exactly (`7`, `7.0`, `7e0`), as
    /// `JSONValue.intValue` reads it; nil for another kind or a number with a fraction.
    public func integer(_ range: Range<Int>) -> Int? {
        var index = range.lowerBound
        let negative = bytes[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        // The common form, up to 18 digits, read here; anything else the parser reads.
        if range.upperBound - index <= 18 {
            var value = 0
            while index < range.upperBound, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") {
                value = value * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                index += 1
            }
            if index == range.upperBound && index > range.lowerBound + (negative ? 1 : 0) { return negative ? -value : value }
        }
        guard kind(of: range) != UInt8(ascii: "\""), kind(of: range) != UInt8(ascii: "n") else { return nil }
        return value(range).intValue
    }

    /// True when the value at `range` is the literal `null`.
    @inlinable public func isNull(_ range: Range<Int>) -> Bool { kind(of: range) == UInt8(ascii: "n") }

    /// How many UTF-8 bytes the string value at `range` holds once its escapes are decoded.
    public func decodedByteCount(ofString range: Range<Int>) -> Int {
        var count = 0
        var index = range.lowerBound + 1
        let end = range.upperBound - 1
        while index < end {
            guard bytes[index] == UInt8(ascii: "\\") else {
                count += 1
                index += 1
                continue
            }
            if bytes[index + 1] == UInt8(ascii: "u") {
                // Each half of a surrogate pair counts 2: the pair is one 4-byte character.
                let code = (try? hex4(at: index + 2)) ?? 0
                count += code < 0x80 ? 1 : code < 0x800 || (0xD800..<0xE000).contains(code) ? 2 : 3
                index += 6
            } else {
                count += 1
                index += 2
            }
        }
        return count
    }

    /// The bytes of the value at `range` that are not whitespace between tokens: its length
    /// as a compact serializer would write it (escapes as written).
    public func compactByteCount(_ range: Range<Int>) -> Int {
        var count = 0
        var index = range.lowerBound
        var inString = false
        while index < range.upperBound {
            let byte = bytes[index]
            if inString {
                if byte == UInt8(ascii: "\\") {
                    count += 1
                    index += 1
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                count += 1
            } else {
                switch byte {
                case 0x20, 0x0A, 0x0D, 0x09: break
                case UInt8(ascii: "\""):
                    inString = true
                    count += 1
                default: count += 1
                }
            }
            index += 1
        }
        return count
    }

    /// True when every byte sequence is well-formed UTF-8 (no overlong forms, surrogates or
    /// code points past U+10FFFF), as RFC 8259 requires of JSON text.
    public func isValidUTF8() -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            let length: Int
            var lowest: UInt8 = 0x80
            var highest: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0:
                length = 3
                lowest = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED:
                length = 3
                highest = 0x9F
            case 0xF0:
                length = 4
                lowest = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4:
                length = 4
                highest = 0x8F
            default: return false
            }
            guard index + length <= count else { return false }
            let second = bytes[index + 1]
            guard second >= lowest && second <= highest else { return false }
            for offset in 2..<length where bytes[index + offset] & 0xC0 != 0x80 { return false }
            index += length
        }
        return true
    }

    // MARK: Skipping

    /// The first byte at or after `start` that is not JSON whitespace.
    public func skipWhitespace(from start: Int) -> Int {
        var index = start
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return index
            }
        }
        return index
    }

    /// The end of the value starting at `index`, checking it is JSON; `depth` is its nesting depth.
    public func skipValue(at index: Int, depth: Int) throws(Invalid) -> Int {
        // As the parser: no value, container or not, deeper than its limit.
        guard depth < JSONParser.maxDepth, index < bytes.count else { throw Invalid(offset: index) }
        switch bytes[index] {
        case UInt8(ascii: "\""): return try skipString(at: index).end
        case UInt8(ascii: "{"), UInt8(ascii: "["): return try skipContainer(at: index, depth: depth)
        case UInt8(ascii: "t"): return try skipLiteral("true", at: index)
        case UInt8(ascii: "f"): return try skipLiteral("false", at: index)
        case UInt8(ascii: "n"): return try skipLiteral("null", at: index)
        default: return try skipNumber(at: index)
        }
    }

    private func skipContainer(at start: Int, depth: Int) throws(Invalid) -> Int {
        guard depth < JSONParser.maxDepth else { throw Invalid(offset: start) }
        let isObject = bytes[start] == UInt8(ascii: "{")
        let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
        var index = skipWhitespace(from: start + 1)
        if index < bytes.count && bytes[index] == close { return index + 1 }
        while true {
            if isObject {
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw Invalid(offset: index) }
                index = skipWhitespace(from: try skipString(at: index).end)
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw Invalid(offset: index) }
                index = skipWhitespace(from: index + 1)
            }
            index = skipWhitespace(from: try skipValue(at: index, depth: depth + 1))
            guard index < bytes.count else { throw Invalid(offset: index) }
            if bytes[index] == close { return index + 1 }
            guard bytes[index] == UInt8(ascii: ",") else { throw Invalid(offset: index) }
            index = skipWhitespace(from: index + 1)
        }
    }

    /// The end of the string starting at `start` (after its closing quote), and whether it has escapes.
    private func skipString(at start: Int) throws(Invalid) -> (end: Int, escaped: Bool) {
        var index = start + 1
        var escaped = false
        let count = bytes.count
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw Invalid(offset: start) }
        while index < count {
            // The common run: plain characters up to the closing quote.
            var byte = base[index]
            while byte != 0x22 && byte != 0x5C && byte >= 0x20 {
                index += 1
                guard index < count else { throw Invalid(offset: index) }
                byte = base[index]
            }
            if byte == UInt8(ascii: "\"") { return (index + 1, escaped) }
            if byte < 0x20 { throw Invalid(offset: index) }  // raw control characters are not JSON
            if byte == UInt8(ascii: "\\") {
                escaped = true
                guard index + 1 < bytes.count else { throw Invalid(offset: index) }
                switch bytes[index + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    index += 2
                case UInt8(ascii: "u"):
                    // As the parser reads them: a high surrogate needs its low one right after,
                    // and a low one alone is not a character.
                    let code = try hex4(at: index + 2)
                    index += 6
                    if (0xD800..<0xDC00).contains(code) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u"),
                            (0xDC00..<0xE000).contains(try hex4(at: index + 2))
                        else { throw Invalid(offset: index) }
                        index += 6
                    } else if (0xDC00..<0xE000).contains(code) {
                        throw Invalid(offset: index)
                    }
                default:
                    throw Invalid(offset: index)
                }
                continue
            }
            index += 1
        }
        throw Invalid(offset: index)
    }

    /// The four hex digits at `start`.
    private func hex4(at start: Int) throws(Invalid) -> UInt32 {
        guard start + 4 <= bytes.count else { throw Invalid(offset: start) }
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = bytes[start + offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw Invalid(offset: start + offset)
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private func skipLiteral(_ literal: StaticString, at start: Int) throws(Invalid) -> Int {
        let end = start + literal.utf8CodeUnitCount
        guard end <= bytes.count, equals(start..<end, literal) else { throw Invalid(offset: start) }
        return end
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private func skipNumber(at start: Int) throws(Invalid) -> Int {
        var index = start
        if index < bytes.count && bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, bytes[index].isDigit else { throw Invalid(offset: index) }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while index < bytes.count && bytes[index].isDigit { index += 1 }
        }
        if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, bytes[index].isDigit else { throw Invalid(offset: index) }
            while index < bytes.count && bytes[index].isDigit { index += 1 }
        }
        if index < bytes.count && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
            index += 1
            if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) { index += 1 }
            guard index < bytes.count, bytes[index].isDigit else { throw Invalid(offset: index) }
            while index < bytes.count && bytes[index].isDigit { index += 1 }
        }
        return index
    }
}

extension UInt8 {
    fileprivate var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
}
