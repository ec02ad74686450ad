import Foundation
import Testing
@testable import SignalboxCore

@Suite struct JSONParserTests {
    @Test func readsEveryKindOfValueAndKeepsKeyOrder() throws {
        let value = try JSONParser.parse(#" {"z": [1, -2.5, 3e2, true, false, null], "a": {"s": "x"}, "big": 9007199254740993} "#)
        #expect(value.objectValue?.keys == ["z", "a", "big"])
        #expect(value["z"] == [1, -2.5, 300, true, false, nil])
        #expect(value["big"] == .int(9_007_199_254_740_993))  // exact, not rounded through a Double
        #expect(value["a"]?["s"] == "x")
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let value = try JSONParser.parse(#"["line\nbreak \"q\" \\ \/ \u00e9 \ud83d\ude00 tab\t"]"#)
        #expect(value.arrayValue?.first == .string("line\nbreak \"q\" \\ / é 😀 tab\t"))
    }

    @Test func roundTripsThroughTheWriter() throws {
        let text = #"{"a":[1,2.5,"x\n\"y\""],"b":{"c":null,"d":true}}"#
        #expect(JSONWriter.string(try JSONParser.parse(text)) == text)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "tru", "01", "1.", "\"open", "{\"a\":1} x", "\"\\ud800\"", "[\"\u{01}\"]", "-"])
    func rejectsMalformedText(text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    @Test func refusesPathologicalNesting() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
    }

    @Test func agreesWithFoundationOnAChatRequest() throws {
        let text =
            #"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"héllo \u2603"}],"temperature":0.7,"max_tokens":64}"#
        let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        #expect(try JSONParser.parse(text) == foundation)
    }
}
