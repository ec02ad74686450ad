import Testing

@testable import SignalboxCore

/// The scanner accepts exactly what the parser accepts, and its spans hold the parser's values.
@Suite struct JSONScannerTests {
    static let documents = [
        #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt","choices":[{"index":0,"delta":{"content":"Hi \"there\"\n"},"finish_reason":null}]}"#,
        #"{"a":[1,-2,3.5,-0.0,1e-07,2E+3,0],"b":{"c":[{},[],"",true,false,null]},"d":"\u00e9\ud83d\ude00\\\/"}"#,
        #"  [ 1 , { "x" : [ ] } , "y" ]  "#,
        #""just a string""#, "0", "-12.5e3", "true", "null", "[]", "{}",
        #"{"nested":[[[[[[[[[[{"deep":1}]]]]]]]]]]}"#,
    ]

    static let invalid = [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        "\"unterminated", "\"bad \\x escape\"", "\"bad \\u12G4\"", "\"raw \u{01} control\"", "[1] 2", "{\"a\":1}}", "[\"a\" \"b\"]",
        "NaN", "Infinity", #""\ud83d""#, #""\ude00""#, #""\ud83d\u0041""#,
    ]

    @Test(arguments: documents) func acceptsWhatTheParserAccepts(_ text: String) throws {
        #expect(accepts(text))
        #expect((try? JSONParser.parse(text)) != nil)
    }

    @Test(arguments: invalid) func refusesWhatTheParserRefuses(_ text: String) {
        #expect(!accepts(text), "scanner accepted \(text.debugDescription)")
        #expect((try? JSONParser.parse(text)) == nil, "parser accepted \(text.debugDescription)")
    }

    /// What mutations insert: JSON's structural bytes and the starts of its tokens.
    static let alphabet = Array("{}[]\",:0-.e\\ nu1tf".utf8)

    @Test func agreesWithTheParserOnThousandsOfMutatedDocuments() {
        var generator = SplitMix64(seed: 14)  // seeded, so a failure repeats
        var disagreements: [String] = []
        var checked = 0
        for document in Self.documents {
            let bytes = Array(document.utf8)
            for _ in 0..<2_000 {
                var mutated = bytes
                for _ in 0...(generator.next() % 3) {
                    let position = Int(generator.next() % UInt64(max(mutated.count, 1)))
                    let byte = Self.alphabet[Int(generator.next() % UInt64(Self.alphabet.count))]
                    switch generator.next() % 3 {
                    case 0 where !mutated.isEmpty: mutated.remove(at: position)
                    case 1: mutated.insert(byte, at: min(position, mutated.count))
                    default: if !mutated.isEmpty { mutated[position] = byte }
                    }
                }
                let text = String(decoding: mutated, as: UTF8.self)
                guard Array(text.utf8) == mutated else { continue }  // only valid UTF-8: the scanner does not check it
                checked += 1
                let parsed = (try? JSONParser.parse(text)) != nil
                if accepts(text) != parsed || walks(text) != parsed { disagreements.append(text) }
            }
        }
        #expect(checked > 10_000)
        #expect(disagreements.isEmpty, "first disagreements: \(disagreements.prefix(5))")
    }

    @Test func membersAndElementsSpanTheParsersValues() throws {
        var text = Self.documents[1]
        try text.withUTF8 { utf8 in
            let bytes = UnsafeRawBufferPointer(utf8)
            let scanner = JSONScanner(bytes)
            let parsed = try JSONParser.parse(bytes)
            var members: [(key: String, value: Range<Int>)] = []
            _ = try scanner.scanObject(at: try scanner.document().lowerBound, depth: 0) { key, _, start throws(JSONScanner.Invalid) in
                let end = try scanner.skipValue(at: start, depth: 1)
                members.append((String(decoding: UnsafeRawBufferPointer(rebasing: bytes[key]), as: UTF8.self), start..<end))
                return end
            }
            #expect(members.map(\.key) == ["a", "b", "d"])
            for member in members {
                #expect(try JSONParser.parse(UnsafeRawBufferPointer(rebasing: bytes[member.value])) == parsed[member.key])
            }
            var elements: [JSONValue] = []
            _ = try scanner.scanArray(at: members[0].value.lowerBound, depth: 1) { start throws(JSONScanner.Invalid) in
                let end = try scanner.skipValue(at: start, depth: 2)
                elements.append(try! JSONParser.parse(UnsafeRawBufferPointer(rebasing: bytes[start..<end])))
                return end
            }
            #expect(elements == parsed["a"]?.arrayValue)
            #expect(scanner.plainString(members[2].value) == nil, "escapes are not decoded")
        }
    }

    @Test func refusesAValueDeeperThanTheParsersLimitEvenAScalar() {
        let depth = JSONParser.maxDepth
        let scalarAtTheLimit = String(repeating: "[", count: depth) + "0" + String(repeating: "]", count: depth)
        #expect(!accepts(scalarAtTheLimit) && !walks(scalarAtTheLimit))
        #expect((try? JSONParser.parse(scalarAtTheLimit)) == nil)
        let justInside = String(repeating: "[", count: depth - 1) + "0" + String(repeating: "]", count: depth - 1)
        #expect(accepts(justInside) && walks(justInside))
        #expect((try? JSONParser.parse(justInside)) != nil)
    }

    @Test func refusesNestingDeeperThanTheParser() {
        let deep = String(repeating: "[", count: JSONParser.maxDepth + 2) + String(repeating: "]", count: JSONParser.maxDepth + 2)
        #expect(!accepts(deep))
        #expect((try? JSONParser.parse(deep)) == nil)
    }

    /// Reads the whole text by descending into every object and array with `scanObject` and
    /// `scanArray` (the one-pass way the relay reads chunks).
    func walks(_ text: String) -> Bool {
        var copy = text
        return copy.withUTF8 { utf8 in
            let scanner = JSONScanner(UnsafeRawBufferPointer(utf8))
            func walk(_ start: Int, _ depth: Int) throws(JSONScanner.Invalid) -> Int {
                switch scanner.kind(at: start) {
                case UInt8(ascii: "{"):
                    return try scanner.scanObject(at: start, depth: depth) { _, _, value throws(JSONScanner.Invalid) in
                        try walk(value, depth + 1)
                    }
                case UInt8(ascii: "["):
                    return try scanner.scanArray(at: start, depth: depth) { element throws(JSONScanner.Invalid) in
                        try walk(element, depth + 1)
                    }
                default: return try scanner.skipValue(at: start, depth: depth)
                }
            }
            guard let end = try? walk(scanner.skipWhitespace(from: 0), 0) else { return false }
            return scanner.skipWhitespace(from: end) == utf8.count
        }
    }

    func accepts(_ text: String) -> Bool {
        var copy = text
        return copy.withUTF8 { (try? JSONScanner(UnsafeRawBufferPointer($0)).document()) != nil }
    }
}
