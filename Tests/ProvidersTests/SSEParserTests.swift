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
}
