import NIOCore
import Testing
@testable import Providers

@Suite struct SSEParserTests {
    @Test func splitsEventsAcrossArbitraryBufferBoundaries() throws {
        let stream = "data: {\"a\":1}\n\n: keep-alive comment\n\ndata: second\n\ndata: [DONE]\n\n"
        for cut in 1..<stream.utf8.count {
            var parser = SSEParser()
            let bytes = Array(stream.utf8)
            var events = try parser.feed(ByteBuffer(bytes: bytes[..<cut]))
            events += try parser.feed(ByteBuffer(bytes: bytes[cut...]))
            #expect(events.map(\.data) == ["{\"a\":1}", "second", "[DONE]"], "cut at \(cut)")
        }
    }

    @Test func readsNamedEventsCRLFAndMultiLineData() throws {
        var parser = SSEParser()
        let events = try parser.feed(ByteBuffer(string: "event: message_start\r\ndata: one\r\ndata: two\r\n\r\n"))
        #expect(events == [SSEEvent(event: "message_start", data: "one\ntwo")])
    }

    @Test func finishReturnsAnEventMissingItsBlankLine() throws {
        var parser = SSEParser()
        #expect(try parser.feed(ByteBuffer(string: "data: last")).isEmpty)
        #expect(parser.finish()?.data == "last")
    }

    /// Every line ending (LF, CRLF, lone CR), comments, named events, multi-line data, a field with
    /// no colon and `data:` with no space: the same events whether the stream comes whole, a byte
    /// at a time, or cut at any two points (so a CRLF is split between buffers too).
    @Test func theSameEventsHoweverTheBytesArrive() throws {
        let stream = "event: a\r\ndata: one\r\ndata:two\r\n\r\n: ping\rdata: three\r\rretry\ndata: {\"x\": \"é\"}\n\ndata\n\n"
        let expected = [
            SSEEvent(event: "a", data: "one\ntwo"), SSEEvent(data: "three"), SSEEvent(data: "{\"x\": \"é\"}"), SSEEvent(data: ""),
        ]
        let bytes = Array(stream.utf8)
        var whole = SSEParser()
        #expect(try whole.feed(ByteBuffer(bytes: bytes)) == expected)
        var byByte = SSEParser()
        var events: [SSEEvent] = []
        for byte in bytes { events += try byByte.feed(ByteBuffer(bytes: [byte])) }
        #expect(events == expected)
        for first in 0...bytes.count {
            for second in first...bytes.count {
                var parser = SSEParser()
                var events = try parser.feed(ByteBuffer(bytes: bytes[..<first]))
                events += try parser.feed(ByteBuffer(bytes: bytes[first..<second]))
                events += try parser.feed(ByteBuffer(bytes: bytes[second...]))
                #expect(events == expected, "cut at \(first) and \(second)")
            }
        }
    }

    @Test func aLineWithNoEndIsRefusedPastTheLimit() throws {
        var parser = SSEParser()
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 1 << 20)
        for _ in 0..<(SSEParser.maxLineLength >> 20) { #expect(try parser.feed(chunk).isEmpty) }
        #expect(throws: SSEError.self) { try parser.feed(chunk) }
    }
}
