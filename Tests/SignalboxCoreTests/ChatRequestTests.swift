import Foundation
import Testing
@testable import SignalboxCore

func json(_ text: String) -> JSONValue {
    try! JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
}

@Suite struct ChatRequestTests {
    @Test func readsModelsStreamAndMaxTokens() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "models": ["c/d", "a/b"], "stream": true, "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}], "tools": [], "temperature": 0.5}
                """))
        #expect(request.models == ["a/b", "c/d"])
        #expect(request.stream)
        #expect(request.maxTokens == 64)
        #expect(request.usedParameters.contains("temperature"))
        #expect(request.promptTokenEstimate > 0)
    }

    @Test func prefersMaxCompletionTokens() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "max_completion_tokens": 10, "max_tokens": 99, "messages": [{"role": "user", "content": "x"}]}
                """))
        #expect(request.maxTokens == 10)
    }

    @Test(arguments: [
        (#"[1, 2]"#, "must be a JSON object"),
        (#"{"messages": [{"role": "user", "content": "x"}]}"#, "'model' is required"),
        (#"{"model": "a/b"}"#, "'messages' is required"),
        (#"{"model": "a/b", "messages": []}"#, "non-empty array"),
        (#"{"model": "a/b", "messages": "hi"}"#, "non-empty array"),
        (#"{"model": "a/b", "messages": [{"role": "wizard", "content": "x"}]}"#, "role"),
        (#"{"model": "a/b", "messages": [{"role": "user"}]}"#, "content is required"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": 5}]}"#, "content must be"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, "'stream'"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#, "max_tokens"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, "temperature"),
        (
            #"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "temperature": 1e400}"#,
            "'temperature' must be a finite number"
        ),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}]} x"#, "not valid JSON"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "n": 2, "n": 500}"#, "'n'"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"sort": "vibes"}}"#, "sort"),
        (#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"data_collection": "maybe"}}"#, "data_collection"),
    ])
    func rejectsMalformedRequestsWithAMessageThatSaysWhy(body: String, fragment: String) {
        do {
            _ = try ChatRequest(bytes: Array(body.utf8))
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func aBodyThatIsNotUTF8IsRefused() {
        var bytes = Array(#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}]}"#.utf8)
        bytes[bytes.count - 5] = 0xC0  // an overlong lead byte inside the content
        #expect(throws: InvalidRequest("Request body is not valid UTF-8")) { try ChatRequest(bytes: bytes) }
    }

    @Test func thePromptBoundCountsDecodedTextWhateverTheKeysAndEscapesLookLike() throws {
        let plain = try ChatRequest(bytes: Array(#"{"model": "a/b", "messages": [{"role": "user", "content": "日本語"}]}"#.utf8))
        // What Python's json.dumps writes by default: every non-ASCII character escaped.
        let escaped = try ChatRequest(
            bytes: Array(#"{"model": "a/b", "messages": [{"role": "user", "content": "\u65e5\u672c\u8a9e"}]}"#.utf8))
        #expect(escaped.prompt == plain.prompt)
        // A key spelt with escapes is the same key to the upstream, so it counts the same.
        let long = String(repeating: "x", count: 10_000)
        let hidden = try ChatRequest(bytes: Array(#"{"model": "a/b", "messages": [{"role": "user", "c\u006fntent": "\#(long)"}]}"#.utf8))
        #expect(hidden.prompt.textTokens > 10_000)
        // Of a repeated top-level key the router reads the last, and forwards only that one.
        let repeated = try ChatRequest(
            bytes: Array(#"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "n": 1, "n": 3}"#.utf8))
        #expect(repeated.choices == 3)
    }

    /// Parsers disagree on which copy of a repeated key they keep, and Go's matches keys in any
    /// letter case: the router refuses what it could read differently from an upstream.
    @Test(arguments: [
        (#"{"role": "user", "content": "LONG", "content": "hi"}"#, "messages[0] has 'content' more than once"),
        (
            #"{"role": "user", "content": [{"type": "image_url", "type": "text", "text": "LONG"}]}"#,
            "messages[0].content[0] has 'type' more than once"
        ),
        (#"{"role": "user", "content": "hi", "Content": "LONG"}"#, "messages[0].Content is not 'content'"),
        (#"{"role": "user", "content": [{"type": "text", "text": "hi", "TEXT": "LONG"}]}"#, "messages[0].content[0].TEXT is not 'text'"),
    ])
    func aMessageTheRouterCouldReadOtherwiseThanTheUpstreamIsRefused(message: String, expected: String) {
        let long = String(repeating: "x", count: 10_000)
        let body = #"{"model": "a/b", "messages": [\#(message.replacingOccurrences(of: "LONG", with: long))]}"#
        #expect(
            throws: InvalidRequest(
                expected + (expected.hasSuffix("'") && expected.contains(" is not ") ? ": field names are case-sensitive" : ""))
        ) {
            try ChatRequest(bytes: Array(body.utf8))
        }
    }

    @Test func aTopLevelFieldInOtherLettersOrTooManyFieldsAreRefused() {
        for spelling in ["Messages", "MESSAGES", #"me\u017f\u017fages"#, "meſſages"] {
            let body = #"{"model": "a/b", "messages": [{"role": "user", "content": "hi"}], "\#(spelling)": []}"#
            #expect(throws: InvalidRequest.self, "\(spelling)") { try ChatRequest(bytes: Array(body.utf8)) }
        }
        let fields = (0..<ChatRequest.maximumFields).map { #""f\#($0)": 0"# }.joined(separator: ",")
        let crowded = #"{"model": "a/b", "messages": [{"role": "user", "content": "hi"}], \#(fields)}"#
        #expect(throws: InvalidRequest("Request body has more than \(ChatRequest.maximumFields) fields")) {
            try ChatRequest(bytes: Array(crowded.utf8))
        }
        // A field nobody reads may be spelt any way: it is the client's own.
        #expect(throws: Never.self) {
            try ChatRequest(bytes: Array(#"{"model": "a/b", "messages": [{"role": "user", "content": "hi"}], "X-Trace": 1}"#.utf8))
        }
    }

    @Test func readsProviderPreferences() throws {
        let request = try ChatRequest(
            json: json(
                """
                {"model": "a/b", "messages": [{"role": "user", "content": "x"}],
                 "provider": {"order": ["OpenAI", "deepinfra/turbo"], "allow_fallbacks": false, "data_collection": "deny",
                              "zdr": true, "sort": {"by": "price"}, "max_price": {"prompt": 1, "completion": "2.5"}}}
                """))
        let preferences = request.provider
        #expect(preferences.order == ["openai", "deepinfra/turbo"])
        #expect(!preferences.allowFallbacks)
        #expect(preferences.denyDataCollection && preferences.zdr)
        #expect(preferences.sort == .price)
        #expect(preferences.maxCompletionPerMillion == ExactDecimal("2.5"))
    }

    /// Every JSON number form a client's library may write — Python's json.dumps writes 1e-07
    /// for 0.0000001 — is the exact decimal it means; what no decimal can mean is a 400.
    @Test(arguments: [
        ("1e-07", "1", 7), ("0.0000001", "1", 7), ("0.00001", "1", 5), ("1e16", "10000000000000000", 0),
        ("1E3", "1000", 0), ("2.50", "250", 2), ("-0.0", "0", 1), ("1.5e-3", "15", 4), ("1e-400", "0", 36),
        ("\"1e-07\"", "1", 7), ("0.1", "1", 1),
    ])
    func maxPriceTakesEveryNumberForm(text: String, significand: String, fractionDigits: Int) throws {
        let request = try ChatRequest(
            bytes: Array(
                #"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"max_price": {"prompt": \#(text)}}}"#.utf8))
        let price = try #require(request.provider.maxPromptPerMillion)
        #expect(price.significand == Int128(significand)! && price.fractionDigits == fractionDigits, "\(price)")
    }

    @Test(arguments: ["1e31", "1e400", "-1e-07", "99999999999999999999999999999999999999999", "\"cheap\"", "true"])
    func maxPriceOutOfRangeIsA400NamingTheField(text: String) {
        let body = #"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "provider": {"max_price": {"completion": \#(text)}}}"#
        #expect(throws: InvalidRequest("'provider.max_price.completion' must be a number from 0 to 1e30 (USD per million tokens)")) {
            try ChatRequest(bytes: Array(body.utf8))
        }
    }

    @Test func integerFieldsTakeIntegerValuedNumbersInAnyForm() throws {
        let body = #"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e3, "n": 2.0}"#
        let request = try ChatRequest(bytes: Array(body.utf8))
        #expect(request.maxTokens == 1000 && request.choices == 2)
        for (field, value) in [("max_tokens", "1e-07"), ("max_tokens", "2.5"), ("n", "1e400")] {
            let bad = #"{"model": "a/b", "messages": [{"role": "user", "content": "x"}], "\#(field)": \#(value)}"#
            #expect(throws: InvalidRequest.self, "\(field): \(value)") { try ChatRequest(bytes: Array(bad.utf8)) }
        }
    }
}
