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
        // Hummingbird never runs the body when the head cannot be written: the hold goes then.
        let unstarted = StreamStartGuard { Task { await pipeline.cancel(prepared) } }
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
            body: ResponseBody { writer in
                unstarted.started()
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
                async let produced = Self.produce(
                    prepared, pipeline: pipeline, into: events, translation: translation,
                    firstData: { nextComment.withLockedValue { $0 = nil } })
                do {
                    while let bytes = await events.next() { try await writer.write(bytes) }
                } catch {
                    // The client is gone: leaving this scope cancels the pipeline, and with it the upstream call.
                    events.finish()
                    throw error
                }
                _ = await produced
                try await writer.finish(nil)
            })
    }
}

extension RouterAPI {
    /// A stream whose response head waits for its first event: until an attempt produced output
    /// the request can still fail, and then the client gets the failure as an HTTP error in its
    /// surface's shape — a status its SDK retries by (Anthropic's 529, 429, 5xx) — instead of a
    /// 200 whose stream holds only an error event. Anthropic answers so. Nothing is written while
    /// waiting, so there are no keep-alive events before the first; a client that leaves
    /// meanwhile ends the request, as a departed client always does.
    func heldStreamResponse(
        _ prepared: PreparedChat, translator: any SurfaceStream, channel: (any Channel)?, surface: some ChatSurface
    ) async -> Response {
        let pipeline = self.pipeline
        let opening = translator.opening
        let keepAlive = translator.keepAlive
        let interval = dependencies.configuration.keepAliveInterval
        let translation = NIOLockedValueBox<any SurfaceStream>(translator)
        let events = EventPipe()
        let gate = FirstEventGate()
        var clientGone: (@Sendable () -> Bool)?
        if let channel {
            // HTTP clients do not half-close a connection they still read from: end-of-input means gone.
            try? await channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: false).get()
            clientGone = { !channel.isActive }
        }
        let producer = Task { [clientGone] in
            let outcome = await Self.produce(
                prepared, pipeline: pipeline, into: events, translation: translation, clientGone: clientGone,
                firstData: { gate.open(.started) })
            gate.open(.finished(outcome))
        }
        // The head waits at most this long: past it the stream begins, and keep-alive events
        // hold the connection open through proxies' idle timeouts until the first output.
        let deadline = Task {
            try? await Task.sleep(for: Self.longestHeldHead)
            gate.open(.waited)
        }
        let first = await withTaskCancellationHandler {
            await gate.wait()
        } onCancel: {
            producer.cancel()
        }
        deadline.cancel()
        switch first {
        case .finished(.failure(let error, deliveredBeforeFailure: false)):
            var response = surface.errorResponse(error)
            response.headers[Self.generationHeader] = prepared.generationID
            return response
        case .finished(.cancelled):
            return surface.errorResponse(APIError(status: 499, message: "Client closed the request"))
        case .started, .finished, .waited:
            // Hummingbird never runs the body when the head cannot be written: the request ends then.
            let unstarted = StreamStartGuard { producer.cancel() }
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", Self.generationHeader: prepared.generationID],
                body: ResponseBody { writer in
                    unstarted.started()
                    // Past the longest hold with no output yet: keep-alive events until it comes.
                    let ticker: PollingWatch.Registration? =
                        first == .waited
                        ? pipeline.watch.every {
                            guard !gate.started else { return false }
                            if gate.keepAliveDue(every: interval, now: pipeline.clock.now) { events.send(keepAlive) }
                            return true
                        } : nil
                    defer { if let ticker { pipeline.watch.cancel(ticker) } }
                    try await withTaskCancellationHandler {
                        do {
                            try await writer.write(opening)
                            while let bytes = await events.next() { try await writer.write(bytes) }
                        } catch {
                            events.finish()
                            producer.cancel()  // the client is gone: so is the upstream call
                            throw error
                        }
                        await producer.value
                        try await writer.finish(nil)
                    } onCancel: {
                        producer.cancel()
                    }
                })
        }
    }

    /// How long a held stream's head may wait for the first output (see `heldStreamResponse`).
    static let longestHeldHead = Duration.seconds(15)

    /// Runs a streamed request, sending its events into `events` and finishing it.
    @inline(never)  // the stream's child task starts with this small frame, not the pipeline's
    @discardableResult
    static func produce(
        _ prepared: PreparedChat, pipeline: ChatPipeline, into events: EventPipe,
        translation: NIOLockedValueBox<any SurfaceStream>?, clientGone: (@Sendable () -> Bool)? = nil,
        firstData: @escaping @Sendable () -> Void
    ) async -> ChatPipeline.RequestOutcome {
        /// What the client gets for `bytes`: empty for a translated chunk with no counterpart,
        /// which keeps the processing comments going.
        @Sendable func translated(_ bytes: ByteBuffer) -> ByteBuffer {
            translation?.withLockedValue { $0.translate(bytes) } ?? bytes
        }
        let outcome = await pipeline.run(
            prepared,
            emit: { bytes in
                let out = translated(bytes)
                guard out.readableBytes > 0 else { return }
                firstData()  // before the data: no comment may follow it
                events.send(out)
            }, clientGone: clientGone)
        for buffer in ChatResponses.closingEvents(outcome, prepared: prepared) {
            let out = translated(buffer)
            if out.readableBytes > 0 { events.send(out) }
        }
        events.finish()
        return outcome
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

/// Says when a held stream's first event came, how the request ended without one, or that the
/// wait ran out: the first of these decides.
final class FirstEventGate: Sendable {
    enum Event: Sendable, Equatable {
        case started
        case finished(ChatPipeline.RequestOutcome)
        /// The wait ran out before either.
        case waited

        static func == (lhs: Event, rhs: Event) -> Bool {
            switch (lhs, rhs) {
            case (.started, .started), (.waited, .waited): true
            case (.finished, .finished): true
            default: false
            }
        }
    }

    private struct State {
        var event: Event?
        var started = false
        var lastKeepAlive: ContinuousClock.Instant?
        var waiter: CheckedContinuation<Event, Never>?
    }

    private let state = NIOLockedValueBox(State())

    /// The first call decides what the waiter gets; `.started` is remembered whenever it comes.
    func open(_ event: Event) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Event, Never>? in
            if event == .started { state.started = true }
            guard state.event == nil else { return nil }
            state.event = event
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: event)
    }

    /// Whether any output came.
    var started: Bool { state.withLockedValue { $0.started } }

    /// True once per `interval`: when a keep-alive event is due.
    func keepAliveDue(every interval: Duration, now: ContinuousClock.Instant) -> Bool {
        state.withLockedValue { state in
            if let last = state.lastKeepAlive, now - last < interval { return false }
            state.lastKeepAlive = now
            return true
        }
    }

    func wait() async -> Event {
        await withCheckedContinuation { continuation in
            let ready = state.withLockedValue { state -> Event? in
                if let event = state.event { return event }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Runs `onDrop` when a stream's body is released without having run (its response head could
/// not be written), so what the request holds is given back.
final class StreamStartGuard: Sendable {
    private let didStart = NIOLockedValueBox(false)
    private let onDrop: @Sendable () -> Void

    init(onDrop: @escaping @Sendable () -> Void) { self.onDrop = onDrop }

    func started() { didStart.withLockedValue { $0 = true } }

    deinit {
        if !didStart.withLockedValue({ $0 }) { onDrop() }
    }
}
