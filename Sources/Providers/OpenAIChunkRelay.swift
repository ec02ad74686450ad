import NIOCore
import SignalboxCore

/// Relays an OpenAI chunk to an OpenAI client as bytes: the router's own fields (`id`,
/// `provider`, `model`, `object`, `created`) are written first, every choice gets OpenRouter's
/// `finish_reason` / `native_finish_reason` / `logprobs` trio, the upstream's `usage` is taken
/// out (the router sends its own, priced), and everything else is copied as it came. What the
/// router needs — output pieces, finish reasons, usage — is read by `JSONScanner`, not parsed.
///
/// A chunk it does not relay as is (an error, reasoning to rename or drop, an escaped key, text
/// that is not JSON) returns nil: the caller then decodes it fully with `OpenAIStreamDecoder`,
/// which handles or refuses it exactly as for any other client.
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
        /// The choices that finished, in OpenAI's shape, for the completion's bookkeeping.
        public var finishedChoices: [JSONValue] = []
        /// The normalized finish reason of the first choice that has one.
        public var finishReason: String?
        public var usage: TokenUsage?
        /// The upstream's `id` and `system_fingerprint`, when asked for.
        public var upstreamID: String?
        public var systemFingerprint: String?
        /// Each choice's text, tool calls and finish, when asked to collect them (for an answer
        /// assembled for a non-streaming client).
        public var parts: [ChoicePart] = []
    }

    /// Appends `data` (one event's data) as an SSE event to `out` when it has choices,
    /// and says what it held; nil, with `out` unchanged, when the chunk needs the full decoder.
    public func relay(_ data: UnsafeRawBufferPointer, identity: Bool, collect: Bool = false, into out: inout [UInt8]) -> Relayed? {
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

    private func write(_ data: UnsafeRawBufferPointer, identity: Bool, collect: Bool, into out: inout [UInt8]) throws -> Relayed {
        // One pass over the chunk: each value is read once, by the code that needs it or by a skip.
        let scanner = JSONScanner(data)
        var relayed = Relayed()
        var sawChoices = false
        var usage: Range<Int>?
        out.append(contentsOf: head)
        let start = scanner.skipWhitespace(from: 0)
        let end = try scanner.scanObject(at: start, depth: 0) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            guard !escaped else { throw JSONScanner.Invalid(offset: key.lowerBound) }
            if scanner.equals(key, "choices") {
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
                usage = value
            } else if scanner.equals(key, "error") {
                // An error object (even in an otherwise normal chunk) is for the full decoder.
                if scanner.kind(of: value) != UInt8(ascii: "n") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "object") {
                if scanner.equals(value, "\"error\"") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "id") {
                if identity { relayed.upstreamID = scanner.plainString(value) }
            } else if scanner.equals(key, "model") || scanner.equals(key, "created") || scanner.equals(key, "provider") {
                // the router's own
            } else {
                if identity && scanner.equals(key, "system_fingerprint") { relayed.systemFingerprint = scanner.plainString(value) }
                out.append(",\"")
                out.append(UnsafeRawBufferPointer(rebasing: data[key]))
                out.append("\":")
                out.append(UnsafeRawBufferPointer(rebasing: data[value]))
            }
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
        var part: ChoicePart? = collect ? ChoicePart(index: 0) : nil
        var index: Range<Int>?
        var native: String?
        var logprobs: Range<Int>?
        out.append("{")
        let end = try scanner.scanObject(at: start, depth: 2) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            guard !escaped else { throw JSONScanner.Invalid(offset: key.lowerBound) }
            let value: Range<Int>
            if scanner.equals(key, "delta") && scanner.kind(at: valueStart) == UInt8(ascii: "{") {
                let (pieces, end) = try outputPieces(at: valueStart, scanner: scanner, part: &part)
                relayed.pieces += pieces
                value = valueStart..<end
            } else {
                value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 3))
            }
            if scanner.equals(key, "finish_reason") {
                if scanner.kind(of: value) != UInt8(ascii: "n") {
                    guard let text = scanner.plainString(value) else { throw JSONScanner.Invalid(offset: key.lowerBound) }
                    native = text
                }
                return value.upperBound
            }
            // A whole `message` in a stream chunk is not OpenAI's streaming shape: the full decoder's.
            if scanner.equals(key, "message") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            if scanner.equals(key, "native_finish_reason") { return value.upperBound }
            if scanner.equals(key, "logprobs") {
                logprobs = value
                return value.upperBound
            }
            if scanner.equals(key, "index") { index = value }
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
        let position: JSONValue = index.flatMap { try? JSONParser.parse(UnsafeRawBufferPointer(rebasing: data[$0])) } ?? .int(0)
        if var part {
            part.index = position.intValue ?? 0
            part.finishReason = normalized
            part.nativeFinishReason = native
            relayed.parts.append(part)
        }
        if let native {
            if relayed.finishReason == nil { relayed.finishReason = normalized }
            relayed.finishedChoices.append(
                [
                    "index": position, "delta": [:], "finish_reason": normalized.map { .string($0) } ?? .null,
                    "native_finish_reason": .string(native),
                ])
        }
        return end
    }

    /// Output pieces in the delta object at `start`, as `CompletionDelta.outputPieces` counts
    /// them, and where it ends. Reasoning the router must rename (`reasoning_content`) or drop
    /// (`reasoning.exclude`) is the full decoder's.
    private func outputPieces(
        at start: Int, scanner: JSONScanner, part: inout ChoicePart?
    ) throws(JSONScanner.Invalid) -> (Int, end: Int) {
        var pieces = 0
        let collect = part != nil
        let end = try scanner.scanObject(at: start, depth: 3) { key, escaped, valueStart throws(JSONScanner.Invalid) in
            if escaped || scanner.equals(key, "reasoning_content") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            if scanner.equals(key, "tool_calls") && scanner.kind(at: valueStart) == UInt8(ascii: "[") {
                var position = 0
                return try scanner.scanArray(at: valueStart, depth: 4) { call throws(JSONScanner.Invalid) in
                    defer { position += 1 }
                    guard scanner.kind(at: call) == UInt8(ascii: "{") else { return try scanner.skipValue(at: call, depth: 5) }
                    var toolCall = ChoicePart.ToolCallPart(index: position)
                    let end = try scanner.scanObject(at: call, depth: 5) { field, _, fieldStart throws(JSONScanner.Invalid) in
                        guard scanner.equals(field, "function"), scanner.kind(at: fieldStart) == UInt8(ascii: "{") else {
                            let value = fieldStart..<(try scanner.skipValue(at: fieldStart, depth: 6))
                            if collect {
                                if scanner.equals(field, "index") {
                                    toolCall.index = Int(scanner.plainNumber(value) ?? "") ?? position
                                } else if scanner.equals(field, "id") {
                                    toolCall.id = try text(value, scanner)
                                } else if scanner.equals(field, "type") {
                                    toolCall.type = try text(value, scanner)
                                }
                            }
                            return value.upperBound
                        }
                        return try scanner.scanObject(at: fieldStart, depth: 6) { name, _, partStart throws(JSONScanner.Invalid) in
                            let value = partStart..<(try scanner.skipValue(at: partStart, depth: 7))
                            if scanner.equals(name, "arguments") {
                                if nonEmptyString(value, scanner) { pieces += 1 }
                                if collect { toolCall.arguments = try text(value, scanner) }
                            } else if collect && scanner.equals(name, "name") {
                                toolCall.name = try text(value, scanner)
                            }
                            return value.upperBound
                        }
                    }
                    part?.toolCalls.append(toolCall)
                    return end
                }
            }
            let value = valueStart..<(try scanner.skipValue(at: valueStart, depth: 4))
            if scanner.equals(key, "content") {
                if nonEmptyString(value, scanner) { pieces += 1 }
                if collect { part?.content = try text(value, scanner) }
            } else if scanner.equals(key, "reasoning") {
                if excludeReasoning { throw JSONScanner.Invalid(offset: key.lowerBound) }
                if nonEmptyString(value, scanner) { pieces += 1 }
                if collect { part?.reasoning = try text(value, scanner) }
            } else if collect && scanner.equals(key, "role") {
                part?.role = try text(value, scanner)
            } else if collect && scanner.equals(key, "refusal") {
                part?.refusal = try text(value, scanner)
            }
            return value.upperBound
        }
        return (pieces, end)
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
