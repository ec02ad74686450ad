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
