import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

extension RouterAPI {
    // MARK: Streams

    /// An SSE response: a processing comment at once and every few seconds until the first
    /// token, each upstream delta re-labelled and written as it arrives, then the usage chunk
    /// and `[DONE]`. A client that hangs up cancels the upstream call.
    func streamResponse(_ prepared: PreparedChat) -> Response {
        let pipeline = self.pipeline
        let keepAlive = dependencies.configuration.keepAliveInterval
        let header = ChatResponses.processing
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
            body: ResponseBody { writer in
                do {
                    try await writer.write(header)
                } catch {
                    await pipeline.cancel(prepared)  // the client left before anything ran
                    throw error
                }
                let (events, continuation) = AsyncStream<ByteBuffer>.makeStream()
                let firstData = NIOLockedValueBox(false)
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let outcome = await pipeline.run(prepared) { events in
                            firstData.withLockedValue { $0 = true }
                            continuation.yield(events)
                        }
                        for buffer in ChatResponses.closingEvents(outcome, prepared: prepared) { continuation.yield(buffer) }
                        continuation.finish()
                    }
                    group.addTask {
                        while !firstData.withLockedValue({ $0 }) {
                            try await Task.sleep(for: keepAlive)
                            if !firstData.withLockedValue({ $0 }) { continuation.yield(header) }
                        }
                    }
                    do {
                        for await buffer in events { try await writer.write(buffer) }
                    } catch {
                        group.cancelAll()  // the client is gone: cancel the upstream call
                        continuation.finish()
                    }
                    group.cancelAll()
                    try? await group.waitForAll()
                }
                try await writer.finish(nil)
            })
    }
}
