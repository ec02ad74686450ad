import NIOCore
import NIOHTTP1
import NIOTLS

/// The body of an upstream response as the connection hands it over: byte buffers in the order
/// they arrived, with backpressure (the connection stops reading while the consumer is behind).
typealias UpstreamBodySequence = NIOThrowingAsyncSequenceProducer<
    ByteBuffer, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, UpstreamExchangeHandler.Demand
>

/// What an exchange resolves to once the response head arrived.
struct UpstreamResponseStart: Sendable {
    var head: HTTPResponseHead
    var body: UpstreamBodySequence
    var connection: UpstreamConnection
    /// Which exchange on the connection this is.
    var exchange: Int
}

/// One keep-alive connection to an upstream and the handler that runs its exchanges.
final class UpstreamConnection: Hashable, Sendable {
    let origin: UpstreamOrigin
    let channel: any Channel
    let handler: UpstreamExchangeHandler

    init(origin: UpstreamOrigin, channel: any Channel, handler: UpstreamExchangeHandler) {
        self.origin = origin
        self.channel = channel
        self.handler = handler
    }

    static func == (lhs: UpstreamConnection, rhs: UpstreamConnection) -> Bool { lhs === rhs }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// Sends one request; `promise` gets the response head and body, or the failure.
    func start(_ head: HTTPRequestHead, body: ByteBuffer, promise: EventLoopPromise<UpstreamResponseStart>) {
        let (handler, connection) = (self.handler, self)
        onEventLoop { handler.start(head, body: body, connection: connection, promise: promise) }
    }

    /// The reader of `exchange`'s body stops early, but not to cancel: see `UpstreamBody.finishQuietly`.
    func finishQuietly(exchange: Int) {
        let handler = self.handler
        onEventLoop { handler.discardRest(exchange: exchange) }
    }

    private func onEventLoop(_ work: @escaping @Sendable () -> Void) {
        if channel.eventLoop.inEventLoop {
            work()
        } else {
            channel.eventLoop.execute(work)
        }
    }
}

/// Runs one HTTP/1.1 exchange at a time on an upstream connection: writes the request, answers
/// the head through a promise, and hands the body to an async sequence as it arrives — batched
/// per socket read, so a consumer that keeps up resumes once per read, not once per chunk.
///
/// Reads stop while the consumer is behind (the sequence's high watermark) and resume when it
/// catches up. A consumer that stops before the end closes the connection, which is how an
/// upstream call is cancelled; a body read to its end leaves the connection to the pool.
///
/// All mutable state is confined to the channel's event loop (hence `@unchecked Sendable`):
/// every entry point runs there.
final class UpstreamExchangeHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    /// Called on the event loop when an exchange ended with the connection reusable, and when the
    /// connection closed (once).
    struct Events: Sendable {
        var reusable: @Sendable () -> Void
        var closed: @Sendable () -> Void
    }

    private enum State {
        case idle
        case awaitingHead(EventLoopPromise<UpstreamResponseStart>, UpstreamConnection, requestKeepAlive: Bool)
        case streaming(UpstreamBodySequence.Source, keepAlive: Bool)
        /// The reader stopped after the stream's own end: the rest of the body is dropped, and
        /// the connection closes unless the body ends within `discardLimits`.
        case discarding(keepAlive: Bool, bytesLeft: Int, timeout: Scheduled<Void>)
        case closed
    }

    /// Byte buffers kept for a consumer that is behind before reads stop: enough to ride out a
    /// burst without holding a whole long answer in memory.
    static let watermarks = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(lowWatermark: 4, highWatermark: 64)

    private var state = State.idle
    private var context: ChannelHandlerContext?
    private var events: Events?
    /// Body buffers of the current socket read, handed over together at the read's end.
    private var batch: [ByteBuffer] = []
    /// The consumer wants more; when false, a read NIO asks for waits in `heldRead`.
    private var demand = true
    private var heldRead = false
    /// Counts exchanges, so a late signal from a finished body's sequence cannot touch the next.
    private var exchange = 0

    /// Over TLS, the connection is ready once the handshake completed.
    private let awaitsHandshake: Bool
    private var ready: EventLoopPromise<Void>?
    private var readyFuture: EventLoopFuture<Void>!

    init(awaitsHandshake: Bool) { self.awaitsHandshake = awaitsHandshake }

    /// Sets the callbacks; a connection that already closed reports so at once. The future
    /// completes when the connection can take a request (after the TLS handshake) or fails with
    /// why it cannot.
    func attach(_ events: Events) -> EventLoopFuture<Void> {
        self.events = events
        if case .closed = state { events.closed() }
        return readyFuture
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        ready = context.eventLoop.makePromise()
        readyFuture = ready?.futureResult
        if !awaitsHandshake { settleReady(.success(())) }
    }

    /// Completes `ready` once: the first outcome stands.
    private func settleReady(_ result: Result<Void, UpstreamFailure>) {
        guard let ready else { return }
        self.ready = nil
        ready.completeWith(result.mapError { $0 as any Error })
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { settleReady(.success(())) }
        context.fireUserInboundEventTriggered(event)
    }

    /// How much of a body is read and dropped after the reader stopped, to keep the connection.
    static let discardLimits = (bytes: 64 * 1024, time: TimeAmount.seconds(2))

    func start(
        _ head: HTTPRequestHead, body: ByteBuffer, connection: UpstreamConnection, promise: EventLoopPromise<UpstreamResponseStart>
    ) {
        guard case .idle = state, let context else {
            if case .closed = state {
                promise.fail(
                    UpstreamFailure(
                        .disconnected, "The provider closed the connection before the request was sent", neverReachedUpstream: true))
            } else {
                promise.fail(UpstreamFailure(.connect, "The upstream connection is busy"))
            }
            return
        }
        exchange += 1
        state = .awaitingHead(promise, connection, requestKeepAlive: head.isKeepAlive)
        demand = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        written.futureResult.whenFailure { [weak self] error in
            // Not all of the request left: the upstream cannot have acted on it.
            self?.fail(UpstreamFailure(.connect, "Could not send the request to the provider: \(error)", neverReachedUpstream: true))
        }
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .awaitingHead(let promise, let connection, let requestKeepAlive) = state else {
                // An answer nobody asked for (an idle connection talking): not a connection to reuse.
                context.close(promise: nil)
                return
            }
            if head.status.code >= 100 && head.status.code < 200 { return }  // 100 Continue and friends
            let sequence = UpstreamBodySequence.makeSequence(
                backPressureStrategy: Self.watermarks, finishOnDeinit: false,
                delegate: Demand(handler: self, eventLoop: context.eventLoop, exchange: exchange))
            state = .streaming(sequence.source, keepAlive: requestKeepAlive && head.isKeepAlive)
            promise.succeed(UpstreamResponseStart(head: head, body: sequence.sequence, connection: connection, exchange: exchange))
        case .body(let buffer):
            switch state {
            case .streaming: batch.append(buffer)
            case .discarding(let keepAlive, let bytesLeft, let timeout):
                guard bytesLeft >= buffer.readableBytes else {
                    timeout.cancel()
                    state = .idle
                    context.close(promise: nil)
                    return
                }
                state = .discarding(keepAlive: keepAlive, bytesLeft: bytesLeft - buffer.readableBytes, timeout: timeout)
            default: break
            }
        case .end:
            // The state moves first: finishing the body's sequence can call straight back
            // (`consumerTerminated`). The connection goes back to the pool before the reader
            // learns the body ended, so its next request finds it there.
            switch state {
            case .streaming(let source, let keepAlive):
                flushBatch(source)
                state = .idle
                keepAlive ? events?.reusable() : context.close(promise: nil)
                source.finish()
            case .discarding(let keepAlive, _, let timeout):
                timeout.cancel()
                state = .idle
                keepAlive ? events?.reusable() : context.close(promise: nil)
            default:
                return
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .streaming(let source, _) = state { flushBatch(source) }
        context.fireChannelReadComplete()
    }

    private func flushBatch(_ source: UpstreamBodySequence.Source) {
        guard !batch.isEmpty else { return }
        let result = source.yield(contentsOf: batch)
        batch.removeAll(keepingCapacity: true)
        switch result {
        case .produceMore: break
        case .stopProducing: demand = false
        case .dropped: context?.close(promise: nil)  // the consumer is gone
        }
    }

    func read(context: ChannelHandlerContext) {
        if case .streaming = state, !demand {
            heldRead = true
            return
        }
        context.read()
    }

    /// The consumer caught up.
    func resumeReading(exchange: Int) {
        guard exchange == self.exchange, case .streaming = state else { return }
        demand = true
        if heldRead, let context {
            heldRead = false
            context.read()
        }
    }

    /// The reader stopped after the stream's own end: drop the rest, keep the connection if the
    /// body ends soon.
    func discardRest(exchange: Int) {
        guard exchange == self.exchange, case .streaming(let source, let keepAlive) = state, let context else { return }
        batch.removeAll()
        guard keepAlive else {
            state = .idle
            context.close(promise: nil)
            source.finish()
            return
        }
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: Self.discardLimits.time) { [weak self] in
            guard let self, case .discarding = self.state else { return }
            self.state = .idle
            self.context?.close(promise: nil)
        }
        state = .discarding(keepAlive: keepAlive, bytesLeft: Self.discardLimits.bytes, timeout: timeout)
        source.finish()
        demand = true
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    /// The consumer stopped (read to the end, or gave up). Before the end, that cancels the
    /// upstream call: the connection closes.
    func consumerTerminated(exchange: Int) {
        guard exchange == self.exchange, case .streaming = state else { return }
        context?.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settleReady(.failure(UpstreamFailure(.connect, "Could not connect to the provider securely: \(error)", neverReachedUpstream: true)))
        fail(UpstreamFailure(.disconnected, "The provider connection failed: \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settleReady(
            .failure(UpstreamFailure(.connect, "The provider closed the connection while it was being made", neverReachedUpstream: true)))
        fail(UpstreamFailure(.disconnected, "The provider closed the connection"))
        state = .closed
        events?.closed()
        context.fireChannelInactive()
    }

    /// Ends the exchange in progress, if any, with `failure`.
    private func fail(_ failure: UpstreamFailure) {
        switch state {
        case .awaitingHead(let promise, _, _):
            state = .idle
            var failure = failure
            if !failure.neverReachedUpstream && failure.kind == .disconnected {
                failure.message = "The provider closed the connection without answering"
            }
            promise.fail(failure)
            context?.close(promise: nil)
        case .streaming(let source, _):
            state = .idle
            batch.removeAll()
            source.finish(failure)
            context?.close(promise: nil)
        case .discarding(_, _, let timeout):
            timeout.cancel()
            state = .idle
        case .idle, .closed:
            break
        }
    }

    /// Forwards the body sequence's demand to the handler, on its event loop.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let handler: UpstreamExchangeHandler
        let eventLoop: any EventLoop
        let exchange: Int

        func produceMore() {
            let (handler, exchange) = (self.handler, self.exchange)
            if eventLoop.inEventLoop {
                handler.resumeReading(exchange: exchange)
            } else {
                eventLoop.execute { handler.resumeReading(exchange: exchange) }
            }
        }

        func didTerminate() {
            let (handler, exchange) = (self.handler, self.exchange)
            if eventLoop.inEventLoop {
                handler.consumerTerminated(exchange: exchange)
            } else {
                eventLoop.execute { handler.consumerTerminated(exchange: exchange) }
            }
        }
    }
}
