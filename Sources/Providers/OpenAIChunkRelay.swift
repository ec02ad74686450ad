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
    }

    /// Appends `data` (one event's data) as an SSE event to `out` when it has choices,
    /// and says what it held; nil, with `out` unchanged, when the chunk needs the full decoder.
    public func relay(_ data: UnsafeRawBufferPointer, identity: Bool, into out: inout [UInt8]) -> Relayed? {
        let mark = out.count
        do {
            let relayed = try write(data, identity: identity, into: &out)
            if !relayed.wroteEvent { out.removeSubrange(mark...) }
            return relayed
        } catch {
            out.removeSubrange(mark...)
            return nil
        }
    }

    private struct NotRelayed: Error {}

    private func write(_ data: UnsafeRawBufferPointer, identity: Bool, into out: inout [UInt8]) throws -> Relayed {
        let scanner = JSONScanner(data)
        let document = try scanner.document()
        var relayed = Relayed()
        var sawChoices = false
        var usage: Range<Int>?
        out += head
        try scanner.forEachMember(of: document) { member throws(JSONScanner.Invalid) in
            guard !member.keyHasEscapes else { throw JSONScanner.Invalid(offset: member.key.lowerBound) }
            let key = member.key
            if scanner.equals(key, "choices") {
                sawChoices = true
                guard scanner.kind(of: member.value) == UInt8(ascii: "[") else { throw JSONScanner.Invalid(offset: key.lowerBound) }
                out.append(",\"choices\":[")
                var first = true
                try scanner.forEachElement(of: member.value) { element throws(JSONScanner.Invalid) in
                    if !first { out.append(",") }
                    first = false
                    try writeChoice(element, scanner: scanner, into: &out, relayed: &relayed)
                    relayed.wroteEvent = true
                }
                out.append("]")
            } else if scanner.equals(key, "usage") {
                usage = member.value
            } else if scanner.equals(key, "error") {
                // An error object (even in an otherwise normal chunk) is for the full decoder.
                if scanner.kind(of: member.value) != UInt8(ascii: "n") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "object") {
                if scanner.equals(member.value, "\"error\"") { throw JSONScanner.Invalid(offset: key.lowerBound) }
            } else if scanner.equals(key, "id") {
                if identity { relayed.upstreamID = scanner.plainString(member.value) }
            } else if scanner.equals(key, "model") || scanner.equals(key, "created") || scanner.equals(key, "provider") {
                // the router's own
            } else {
                if identity && scanner.equals(key, "system_fingerprint") {
                    relayed.systemFingerprint = scanner.plainString(member.value)
                }
                out.append(",\"")
                out.append(UnsafeRawBufferPointer(rebasing: data[member.key]))
                out.append("\":")
                out.append(UnsafeRawBufferPointer(rebasing: data[member.value]))
            }
        }
        guard sawChoices || usage != nil else { throw NotRelayed() }
        if let usage {
            // Usage comes once per stream: parsing it is cheap enough.
            relayed.usage = TokenUsage(openAI: try JSONParser.parse(UnsafeRawBufferPointer(rebasing: data[usage])))
        }
        out.append("}\n\n")
        return relayed
    }

    /// One element of `choices`, with the finish trio rewritten and the delta read for output.
    private func writeChoice(
        _ element: Range<Int>, scanner: JSONScanner, into out: inout [UInt8], relayed: inout Relayed
    ) throws(JSONScanner.Invalid) {
        guard scanner.kind(of: element) == UInt8(ascii: "{") else { throw JSONScanner.Invalid(offset: element.lowerBound) }
        let data = scanner.bytes
        var index: Range<Int>?
        var native: String?
        var logprobs: Range<Int>?
        out.append("{")
        try scanner.forEachMember(of: element) { member throws(JSONScanner.Invalid) in
            guard !member.keyHasEscapes else { throw JSONScanner.Invalid(offset: member.key.lowerBound) }
            let key = member.key
            if scanner.equals(key, "finish_reason") {
                if scanner.kind(of: member.value) != UInt8(ascii: "n") {
                    guard let text = scanner.plainString(member.value) else { throw JSONScanner.Invalid(offset: key.lowerBound) }
                    native = text
                }
                return
            }
            if scanner.equals(key, "native_finish_reason") { return }
            if scanner.equals(key, "logprobs") {
                logprobs = member.value
                return
            }
            if scanner.equals(key, "index") { index = member.value }
            if scanner.equals(key, "delta") { relayed.pieces += try outputPieces(member.value, scanner: scanner) }
            out.append("\"")
            out.append(UnsafeRawBufferPointer(rebasing: data[key]))
            out.append("\":")
            out.append(UnsafeRawBufferPointer(rebasing: data[member.value]))
            out.append(",")
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
        if let native {
            if relayed.finishReason == nil { relayed.finishReason = normalized }
            let position: JSONValue =
                index.flatMap { try? JSONParser.parse(UnsafeRawBufferPointer(rebasing: data[$0])) } ?? .int(0)
            relayed.finishedChoices.append(
                [
                    "index": position, "delta": [:], "finish_reason": normalized.map { .string($0) } ?? .null,
                    "native_finish_reason": .string(native),
                ])
        }
    }

    /// Output pieces in a delta, as `CompletionDelta.outputPieces` counts them. Reasoning the
    /// router must rename (`reasoning_content`) or drop (`reasoning.exclude`) is the full decoder's.
    private func outputPieces(_ delta: Range<Int>, scanner: JSONScanner) throws(JSONScanner.Invalid) -> Int {
        guard scanner.kind(of: delta) == UInt8(ascii: "{") else { return 0 }
        var pieces = 0
        try scanner.forEachMember(of: delta) { member throws(JSONScanner.Invalid) in
            let key = member.key
            if member.keyHasEscapes || scanner.equals(key, "reasoning_content") {
                throw JSONScanner.Invalid(offset: key.lowerBound)
            }
            if scanner.equals(key, "content") {
                if nonEmptyString(member.value, scanner) { pieces += 1 }
            } else if scanner.equals(key, "reasoning") {
                if excludeReasoning { throw JSONScanner.Invalid(offset: key.lowerBound) }
                if nonEmptyString(member.value, scanner) { pieces += 1 }
            } else if scanner.equals(key, "tool_calls"), scanner.kind(of: member.value) == UInt8(ascii: "[") {
                try scanner.forEachElement(of: member.value) { call throws(JSONScanner.Invalid) in
                    guard scanner.kind(of: call) == UInt8(ascii: "{") else { return }
                    try scanner.forEachMember(of: call) { field throws(JSONScanner.Invalid) in
                        guard scanner.equals(field.key, "function"), scanner.kind(of: field.value) == UInt8(ascii: "{") else { return }
                        try scanner.forEachMember(of: field.value) { part throws(JSONScanner.Invalid) in
                            if scanner.equals(part.key, "arguments") && nonEmptyString(part.value, scanner) { pieces += 1 }
                        }
                    }
                }
            }
        }
        return pieces
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
        append(contentsOf: UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    fileprivate mutating func append(_ bytes: UnsafeRawBufferPointer) { append(contentsOf: bytes) }
}
