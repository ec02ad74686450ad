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
    ///
    /// The pipeline runs in an `async let` beside the writer, and the processing comments come
    /// from a tick on the shared `watch`: one child task per stream, where a task group with a
    /// ticker task cost a second task and the group's own allocation for as long as it is open.
    ///
    /// With a `translator` (a surface other than chat completions), every chat event passes
    /// through it on its way to the client, and its `keepAlive` replaces the processing comment.
    func streamResponse(_ prepared: PreparedChat, translator: (any SurfaceStream)? = nil) -> Response {
        let pipeline = self.pipeline
        let keepAlive = dependencies.configuration.keepAliveInterval
        let header = translator?.keepAlive ?? ChatResponses.processing
        let opening = translator?.opening ?? header
        let translation = translator.map { NIOLockedValueBox($0) }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
            body: ResponseBody { writer in
                do {
                    try await writer.write(opening)
                } catch {
                    await pipeline.cancel(prepared)  // the client left before anything ran
                    throw error
                }
                let events = EventPipe()
                // When the next processing comment is due; nil once the first data went out.
                let nextComment = NIOLockedValueBox<ContinuousClock.Instant?>(pipeline.clock.now + keepAlive)
                let ticker = pipeline.watch.every {
                    // Sent under the lock the first data takes, so no comment follows it.
                    nextComment.withLockedValue { next -> Bool in
                        guard let due = next else { return false }
                        if pipeline.clock.now >= due {
                            next = due + keepAlive
                            events.send(header)
                        }
                        return true
                    }
                }
                defer { pipeline.watch.cancel(ticker) }
                async let produced: Void = Self.produce(
                    prepared, pipeline: pipeline, into: events, translation: translation,
                    firstData: { nextComment.withLockedValue { $0 = nil } })
                do {
                    while let bytes = await events.next() { try await writer.write(bytes) }
                } catch {
                    // The client is gone: leaving this scope cancels the pipeline, and with it the upstream call.
                    events.finish()
                    throw error
                }
                await produced
                try await writer.finish(nil)
            })
    }
}

extension RouterAPI {
    /// Runs a streamed request, sending its events into `events` and finishing it.
    @inline(never)  // the stream's child task starts with this small frame, not the pipeline's
    static func produce(
        _ prepared: PreparedChat, pipeline: ChatPipeline, into events: EventPipe,
        translation: NIOLockedValueBox<any SurfaceStream>?, firstData: @escaping @Sendable () -> Void
    ) async {
        /// What the client gets for `bytes`: empty for a translated chunk with no counterpart,
        /// which keeps the processing comments going.
        @Sendable func translated(_ bytes: ByteBuffer) -> ByteBuffer {
            translation?.withLockedValue { $0.translate(bytes) } ?? bytes
        }
        let outcome = await pipeline.run(prepared) { bytes in
            let out = translated(bytes)
            guard out.readableBytes > 0 else { return }
            firstData()  // before the data: no comment may follow it
            events.send(out)
        }
        for buffer in ChatResponses.closingEvents(outcome, prepared: prepared) {
            let out = translated(buffer)
            if out.readableBytes > 0 { events.send(out) }
        }
        events.finish()
    }
}

/// Carries a stream's SSE bytes from the relay to the task writing the response. Bytes sent
/// while the writer is busy join those already waiting, so the writer takes everything pending
/// in one write, and a waiting writer is woken once per send. (A stdlib `AsyncStream` costs a
/// queue entry, unspecialized generic code and runtime metadata lookups for every event.)
final class EventPipe: Sendable {
    private struct State {
        var pending = ByteBuffer()
        var finished = false
        var reader: UnsafeContinuation<ByteBuffer?, Never>?
    }

    private let state = NIOLockedValueBox(State())

    /// Adds bytes for the writer; dropped once the pipe is finished.
    func send(_ bytes: ByteBuffer) {
        let reader = state.withLockedValue { state -> UnsafeContinuation<ByteBuffer?, Never>? in
            guard !state.finished else { return nil }
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            var bytes = bytes
            state.pending.writeBuffer(&bytes)
            return nil
        }
        reader?.resume(returning: bytes)
    }

    /// Everything sent since the last call, waiting for some if there is none; nil once finished
    /// and drained, or when the reading task is cancelled (which finishes the pipe). One reader.
    func next() async -> ByteBuffer? {
        if let ready = takePending() { return ready }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { continuation in
                let immediate = state.withLockedValue { state -> ByteBuffer?? in
                    if state.pending.readableBytes > 0 {
                        defer { state.pending = ByteBuffer() }
                        return .some(state.pending)
                    }
                    if state.finished { return .some(nil) }
                    precondition(state.reader == nil, "EventPipe has one reader")
                    state.reader = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            finish()
        }
    }

    /// No more bytes: a waiting writer gets nil.
    func finish() {
        let reader = state.withLockedValue { state -> UnsafeContinuation<ByteBuffer?, Never>? in
            state.finished = true
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: nil)
    }

    private func takePending() -> ByteBuffer? {
        state.withLockedValue { state in
            guard state.pending.readableBytes > 0 else { return nil }
            defer { state.pending = ByteBuffer() }
            return state.pending
        }
    }
}
