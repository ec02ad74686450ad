import Foundation
import SignalboxCore

/// Relays an OpenAI chunk to an OpenAI client as bytes. The router's own fields (`id`,
/// `provider`, `model`, `object`, `created`) are written first, then the upstream's
/// `system_fingerprint` and its `choices` — each choice copied as it came, with OpenRouter's
/// `finish_reason` / `native_finish_reason` / `logprobs` trio in place of the upstream's. The
/// upstream's `usage` is taken out (the router sends its own, priced), as are its other top-level
/// fields, so the client sees what the full decode-and-encode path would show. What the router
/// needs — output pieces, finish reasons, usage, and for an assembled answer the text and tool
/// calls — is read by `JSONScanner`, not parsed.
///
/// A chunk it does not relay as is returns nil, and the caller decodes it fully with
/// `OpenAIStreamDecoder`, which handles or refuses it as for any other client: an error, reasoning
/// to rename or drop, an escaped key or a repeated one among those it reads, a line break (an
/// event of several `data:` lines), a whole `message`, text that is not JSON.
public struct OpenAIChunkRelay: Sendable {
    /// `data: {"id":…,"provider":…,"model":…,"object":"chat.completion.chunk","created":…`
    let head: [UInt8]
    let excludeReasoning: Bool

    public init(generationID: String, provider: String, model: String, created: Int64, excludeReasoning: Bool) {
        var head = Array("data: {\"id\":".utf8)
        JSONWriter.write(.string(generationID), into: &head)
        head += ",\"provider\":".utf8
        JSONWriter.write(.string(provider), into: &head)
        head += ",\"model\":".utf8
        JSONWriter.write(.string(model), into: &head)
        head += ",\"object\":\"chat.completion.chunk\",\"created\":".utf8
        head += String(created).utf8
        self.head = head
        self.excludeReasoning = excludeReasoning
    }

    /// What a relayed chunk held.
    public struct Relayed: Sendable {
        /// Output pieces (non-empty content, reasoning or tool-call argument fragments).
        public var pieces = 0
        /// The chunk had choices, so an event was written.
        public var wroteEvent = false
        /// The normalized finish reason of the first choice that has one.
        public var finishReason: String?
        public var usage: TokenUsage?
        /// The upstream's `id` and `system_fingerprint`, when asked for.
        public var upstreamID: String?
        public var systemFingerprint: String?
        /// One part per choice in the chunk: its index and finish always; its text and tool calls
        /// when asked to collect them (an answer assembled for a non-streaming client).
        public var parts: [ChoicePart] = []
    }

    /// Appends `data` (one event's data) as an SSE event to `out` when it has choices,
    /// and says what it held; nil, with `out` unchanged, when the chunk needs the full decoder.
    public func relay(_ data: UnsafeRawBufferPointer, identity: Bool, collect: Bool = false, into out: inout [UInt8]) -> Relayed? {
        // A line break can only be whitespace between tokens, from an event of several `data:`
        // lines; copied as it came it would end the client's line mid-JSON.
        if let base = data.baseAddress, memchr(base, 0x0A, data.count) != nil || memchr(base, 0x0D, data.count) != nil {
            return nil
        }
        let mark = out.count
        do {
            let relayed = try write(data, identity: identity, collect: collect, into: &out)
            if !relayed.wroteEvent { out.removeSubrange(mark...) }
            return relayed
        } catch {
            out.removeSubrange(mark...)
            return nil
        }
    }

    private struct NotRelayed: Error {}

    /// Keys the relay reads, per object: seeing one twice sends the chunk to the full decoder
    /// (whose parser keeps the last), so the relay never reads one value and forwards another.
    private struct SeenKeys {
        private var bits: UInt16 = 0
        mutating func first(_ bit: UInt16) throws(JSONScanner.Invalid) {
            guard bits & bit == 0 else { throw JSONScanner.Invalid(offset: 0) }
            bits |= bit
        }
    }

    private func write(_ data: UnsafeRawBufferPointer, identity: Bool, collect: Bool, into out: inout [UInt8]) throws -> Relayed {
        // One pass over the chunk: each value is read once, by the code that needs it or by a skip.
        let scanner = JSONScanner(data)
        var relayed = Relayed()
        var seen = SeenKeys()
        var sawChoices = false
        var usage: Range<Int>?
        out.append(contentsOf: head)
        let start = scanner.skipWhitespace(from: 0)
        let end = try scanner.scanObject(at: start, depth: 0) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            guard !escaped else { throw JSONScanner.Invalid(offset: key.lowerBound) }
            if scanner.equals(key, "choices") {
                try seen.first(1)
                sawChoices = true
                out.append(",\"choices\":[")
                var first = true
                let end = try scanner.scanArray(at: valueStart, depth: 1) { element throws(JSONScanner.Invalid) in
                    if !first { out.append(",") }
                    first = false
                    relayed.wroteEvent = true
                    return try writeChoice(at: element, scanner: scanner, collect: collect, into: &out, relayed: &relayed)
                }
                out.append("]")
                return end
            }
            let value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 1))
            if scanner.equals(key, "usage") {
                try seen.first(2)
                usage = value
            } else if scanner.equals(key, "error") {
                // An error object (even in an otherwise normal chunk) is for the full decoder.
                if scanner.kind(of: value) != UInt8(ascii: "n") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "object") {
                try seen.first(4)
                if try text(value, scanner) == "error" { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "id") {
                try seen.first(8)
                if identity { relayed.upstreamID = try text(value, scanner) }
            } else if scanner.equals(key, "system_fingerprint") {
                try seen.first(16)
                // Written only as a string, as the full path writes it.
                if let fingerprint = try text(value, scanner) {
                    if identity { relayed.systemFingerprint = fingerprint }
                    out.append(",\"system_fingerprint\":")
                    out.append(UnsafeRawBufferPointer(rebasing: data[value]))
                }
            }
            // Anything else (the upstream's model, created, its own extras) is not the client's.
            return value.upperBound
        }
        guard scanner.skipWhitespace(from: end) == data.count, sawChoices || usage != nil else { throw NotRelayed() }
        if let usage {
            // Usage comes once per stream: parsing it is cheap enough.
            relayed.usage = TokenUsage(openAI: try JSONParser.parse(UnsafeRawBufferPointer(rebasing: data[usage])))
        }
        out.append("}\n\n")
        return relayed
    }

    /// One element of `choices`, with the finish trio rewritten and the delta read for output.
    /// Returns where the element ends.
    private func writeChoice(
        at start: Int, scanner: JSONScanner, collect: Bool, into out: inout [UInt8], relayed: inout Relayed
    ) throws(JSONScanner.Invalid) -> Int {
        let data = scanner.bytes
        var part = ChoicePart(index: 0)
        var seen = SeenKeys()
        var index: Range<Int>?
        var native: String?
        var logprobs: Range<Int>?
        out.append("{")
        let end = try scanner.scanObject(at: start, depth: 2) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            guard !escaped else { throw JSONScanner.Invalid(offset: key.lowerBound) }
            // A whole `message` in a stream chunk is not OpenAI's streaming shape: the full decoder's.
            if scanner.equals(key, "message") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            let value: Range<Int>
            if scanner.equals(key, "delta") {
                try seen.first(1)
                if scanner.kind(at: valueStart) == UInt8(ascii: "{") {
                    let (pieces, end) = try readDelta(at: valueStart, scanner: scanner, collect: collect, part: &part)
                    relayed.pieces += pieces
                    value = valueStart..<end
                } else {
                    value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 3))
                }
            } else {
                value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 3))
            }
            if scanner.equals(key, "finish_reason") {
                try seen.first(2)
                if scanner.kind(of: value) != UInt8(ascii: "n") {
                    guard let text = scanner.plainString(value) else { throw JSONScanner.Invalid(offset: key.lowerBound) }
                    native = text
                }
                return value.upperBound
            }
            if scanner.equals(key, "native_finish_reason") { return value.upperBound }
            if scanner.equals(key, "logprobs") {
                try seen.first(4)
                logprobs = value
                return value.upperBound
            }
            if scanner.equals(key, "index") {
                try seen.first(8)
                index = value
            }
            out.append("\"")
            out.append(UnsafeRawBufferPointer(rebasing: data[key]))
            out.append("\":")
            out.append(UnsafeRawBufferPointer(rebasing: data[value]))
            out.append(",")
            return value.upperBound
        }
        let normalized = FinishReason.normalize(native)
        out.append("\"finish_reason\":")
        writeOptionalString(normalized, into: &out)
        out.append(",\"native_finish_reason\":")
        writeOptionalString(native, into: &out)
        out.append(",\"logprobs\":")
        if let logprobs {
            out.append(UnsafeRawBufferPointer(rebasing: data[logprobs]))
        } else {
            out.append("null")
        }
        out.append("}")
        if relayed.finishReason == nil { relayed.finishReason = normalized }
        part.index = intValue(index, scanner) ?? 0
        part.finishReason = normalized
        part.nativeFinishReason = native
        relayed.parts.append(part)
        return end
    }

    /// Reads the delta object at `start`: its output pieces, as `CompletionDelta.outputPieces`
    /// counts them, and — when collecting — its text and tool calls into `part`. Returns the
    /// pieces and where the delta ends. Reasoning the router must rename (`reasoning_content`) or
    /// drop (`reasoning.exclude`) is the full decoder's.
    private func readDelta(
        at start: Int, scanner: JSONScanner, collect: Bool, part: inout ChoicePart
    ) throws(JSONScanner.Invalid) -> (Int, end: Int) {
        var pieces = 0
        var seen = SeenKeys()
        let end = try scanner.scanObject(at: start, depth: 3) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            if escaped || scanner.equals(key, "reasoning_content") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            if scanner.equals(key, "tool_calls") {
                try seen.first(1)
                guard scanner.kind(at: valueStart) == UInt8(ascii: "[") else { return try scanner.skipValue(at: valueStart, depth: 4) }
                var position = 0
                return try scanner.scanArray(at: valueStart, depth: 4) { call throws(JSONScanner.Invalid) in
                    defer { position += 1 }
                    let (callPieces, toolCall, end) = try readToolCall(at: call, position: position, scanner: scanner, collect: collect)
                    pieces += callPieces
                    if collect { part.toolCalls.append(toolCall) }
                    return end
                }
            }
            let value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 4))
            if scanner.equals(key, "content") {
                try seen.first(2)
                if nonEmptyString(value, scanner) { pieces += 1 }
                if collect { part.content = try text(value, scanner) }
            } else if scanner.equals(key, "reasoning") {
                try seen.first(4)
                if excludeReasoning { throw JSONScanner.Invalid(offset: key.lowerBound) }
                if nonEmptyString(value, scanner) { pieces += 1 }
                if collect { part.reasoning = try text(value, scanner) }
            } else if scanner.equals(key, "role") {
                try seen.first(8)
                if collect { part.role = try text(value, scanner) }
            } else if scanner.equals(key, "refusal") {
                try seen.first(16)
                if collect { part.refusal = try text(value, scanner) }
            }
            return value.upperBound
        }
        return (pieces, end)
    }

    /// One element of `tool_calls`: its argument piece, and — when collecting — the call.
    private func readToolCall(
        at start: Int, position: Int, scanner: JSONScanner, collect: Bool
    ) throws(JSONScanner.Invalid) -> (pieces: Int, ChoicePart.ToolCallPart, end: Int) {
        var toolCall = ChoicePart.ToolCallPart(index: position)
        guard scanner.kind(at: start) == UInt8(ascii: "{") else { return (0, toolCall, try scanner.skipValue(at: start, depth: 5)) }
        var pieces = 0
        var seen = SeenKeys()
        let end = try scanner.scanObject(at: start, depth: 5) { field, escaped, fieldStart throws(JSONScanner.Invalid) in
            guard !escaped else { throw JSONScanner.Invalid(offset: field.lowerBound) }
            if scanner.equals(field, "function") {
                try seen.first(1)
                guard scanner.kind(at: fieldStart) == UInt8(ascii: "{") else { return try scanner.skipValue(at: fieldStart, depth: 6) }
                var seenInFunction = SeenKeys()
                return try scanner.scanObject(at: fieldStart, depth: 6) { name, escaped, partStart throws(JSONScanner.Invalid) in
                    guard !escaped else { throw JSONScanner.Invalid(offset: name.lowerBound) }
                    let value = partStart..<(try scanner.skipValue(at: partStart, depth: 7))
                    if scanner.equals(name, "arguments") {
                        try seenInFunction.first(1)
                        if nonEmptyString(value, scanner) { pieces += 1 }
                        if collect { toolCall.arguments = try text(value, scanner) }
                    } else if scanner.equals(name, "name") {
                        try seenInFunction.first(2)
                        if collect { toolCall.name = try text(value, scanner) }
                    }
                    return value.upperBound
                }
            }
            let value = fieldStart..<(try scanner.skipValue(at: fieldStart, depth: 6))
            if scanner.equals(field, "index") {
                try seen.first(2)
                toolCall.index = intValue(value, scanner) ?? position
            } else if scanner.equals(field, "id") {
                try seen.first(4)
                if collect { toolCall.id = try text(value, scanner) }
            } else if scanner.equals(field, "type") {
                try seen.first(8)
                if collect { toolCall.type = try text(value, scanner) }
            }
            return value.upperBound
        }
        return (pieces, toolCall, end)
    }

    /// A string value's text (escapes decoded); nil for null or another kind, as `stringValue` reads it.
    private func text(_ value: Range<Int>, _ scanner: JSONScanner) throws(JSONScanner.Invalid) -> String? {
        guard scanner.kind(of: value) == UInt8(ascii: "\"") else { return nil }
        if let plain = scanner.plainString(value) { return plain }
        guard let decoded = try? JSONParser.parse(UnsafeRawBufferPointer(rebasing: scanner.bytes[value])) else {
            throw JSONScanner.Invalid(offset: value.lowerBound)
        }
        return decoded.stringValue
    }

    /// A number value as `intValue` reads it (nil for another kind, or a number that is no integer).
    private func intValue(_ value: Range<Int>?, _ scanner: JSONScanner) -> Int? {
        guard let value else { return nil }
        return scanner.integer(value)
    }

    private func nonEmptyString(_ value: Range<Int>, _ scanner: JSONScanner) -> Bool {
        scanner.kind(of: value) == UInt8(ascii: "\"") && value.count > 2
    }

    private func writeOptionalString(_ text: String?, into out: inout [UInt8]) {
        guard let text else {
            out.append("null")
            return
        }
        JSONWriter.write(.string(text), into: &out)
    }
}

extension Array where Element == UInt8 {
    /// Appends ASCII text known at compile time.
    fileprivate mutating func append(_ text: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Appends raw bytes as one copy (an `UnsafeRawBufferPointer` would be appended byte by byte).
    fileprivate mutating func append(_ bytes: UnsafeRawBufferPointer) {
        append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
    }
}
