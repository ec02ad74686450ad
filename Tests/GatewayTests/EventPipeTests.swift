import NIOCore
import Testing

@testable import Gateway

/// The pipe between a stream's relay and its writer: nothing lost, nothing reordered, batches
/// taken whole, and an end the writer sees after the last bytes.
@Suite struct EventPipeTests {
    @Test func bytesSentWhileTheWriterIsBusyArriveTogetherInOrder() async {
        let pipe = EventPipe()
        for event in ["a\n\n", "b\n\n", "c\n\n"] { pipe.send(ByteBuffer(string: event)) }
        let batch = await pipe.next()
        #expect(batch.map { String(buffer: $0) } == "a\n\nb\n\nc\n\n")
    }

    @Test func aWaitingWriterIsWokenBySendAndTheEndComesAfterTheLastBytes() async {
        let pipe = EventPipe()
        let writer = Task {
            var received = ""
            while let bytes = await pipe.next() { received += String(buffer: bytes) }
            return received
        }
        for index in 0..<1000 {
            pipe.send(ByteBuffer(string: "\(index),"))
            if index % 100 == 0 { await Task.yield() }
        }
        pipe.finish()
        pipe.send(ByteBuffer(string: "after the end"))
        let received = await writer.value
        #expect(received == (0..<1000).map { "\($0)," }.joined())
    }

    @Test func aCancelledWriterStopsWaiting() async {
        let pipe = EventPipe()
        let writer = Task { await pipe.next() }
        try? await Task.sleep(for: .milliseconds(20))
        writer.cancel()
        #expect(await writer.value == nil)
        pipe.send(ByteBuffer(string: "dropped: the pipe is finished"))
        #expect(await pipe.next() == nil)
    }
}
