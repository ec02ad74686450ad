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

    /// The caller waiting for `promise` was cancelled: closes the connection if that exchange
    /// still waits for its head (and only then: the connection may already serve another).
    func cancel(_ promise: EventLoopPromise<UpstreamResponseStart>) {
        let handler = self.handler
        onEventLoop { handler.cancel(promise) }
    }

    /// Stops a call while its new connection is being made (see `UpstreamAbort`): closes the
    /// connection only if it has not started an exchange (by then it may serve another call).
    func abortConnecting() {
        let handler = self.handler
        onEventLoop { handler.abortConnecting() }
    }

    /// Stops `exchange` while its body streams (see `UpstreamAbort`): the body ends in a failure
    /// and the connection closes. Nothing happens once that exchange is over.
    func abort(exchange: Int) {
        let handler = self.handler
        onEventLoop { handler.abort(exchange: exchange) }
    }

    /// The reader of `exchange`'s body stops early, but not to cancel: see `UpstreamBody.finishQuietly`.
    func finishQuietly(exchange: Int) {
        let handler = self.handler
        onEventLoop { handler.discardRest(exchange: exchange) }
    }

    private func onEventLoop(_ work: @escaping @Sendable () -> Void) { channel.eventLoop.runNowOrSoon(work) }
}

extension EventLoop {
    /// Runs `work` at once when called on this loop, otherwise queues it there.
    fileprivate func runNowOrSoon(_ work: @escaping @Sendable () -> Void) {
        if inEventLoop {
            work()
        } else {
            execute(work)
        }
    }
}

/// Runs one HTTP/1.1 exchange at a time on an upstream connection: writes the request, answers
/// the head through a promise, and hands the body to an async sequence as it arrives — batched
/// per socket read, so a consumer that keeps up resumes once per read, not once per chunk.
///
/// Reads stop while the consumer is behind (the sequence's high watermark) and resume when it
/// catches up. A consumer that stops before the end closes the connection, which is how an
/// upstream call is cancelled; a body read to its end leaves the connection to the pool — only
/// when the request was written whole, the response was framed and both sides keep it alive.
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
        /// Being closed, or closed: never handed out again.
        case closed
    }

    /// Byte buffers kept for a consumer that is behind before reads stop: enough to ride out a
    /// burst without holding a whole long answer in memory.
    static let watermarks = NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark(lowWatermark: 4, highWatermark: 64)
    /// How much of a body is read and dropped after the reader stopped, to keep the connection.
    static let discardLimits = (bytes: 64 * 1024, time: TimeAmount.seconds(2))

    private var state = State.idle
    private var context: ChannelHandlerContext?
    /// Cleared when the connection closes: the callbacks hold the connection, which holds this.
    private var events: Events?
    private var reportedClosed = false
    /// Body buffers of the current socket read, handed over together at the read's end.
    private var batch: [ByteBuffer] = []
    /// The consumer wants more; when false, a read NIO asks for waits in `heldRead`.
    private var demand = true
    private var heldRead = false
    /// Counts exchanges, so a late signal from a finished exchange cannot touch the next.
    private var exchange = 0
    /// The current request left whole; until then the connection cannot serve another.
    private var requestWritten = false

    /// Over TLS, the connection is ready once the handshake completed, within this long.
    private let handshakeTimeout: TimeAmount?
    private var ready: EventLoopPromise<Void>?
    private var readyFuture: EventLoopFuture<Void>?

    init(handshakeTimeout: TimeAmount?) { self.handshakeTimeout = handshakeTimeout }

    /// Sets the callbacks; a connection that already closed reports so at once. The future
    /// completes when the connection can take a request (after the TLS handshake) or fails with
    /// why it cannot.
    func attach(_ events: Events) -> EventLoopFuture<Void> {
        if reportedClosed {
            events.closed()
        } else {
            self.events = events
        }
        return readyFuture!
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let ready = context.eventLoop.makePromise(of: Void.self)
        self.ready = ready
        readyFuture = ready.futureResult
        guard let handshakeTimeout else {
            settleReady(.success(()))
            return
        }
        context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) { [weak self] in
            guard let self, self.ready != nil else { return }
            self.settleReady(
                .failure(UpstreamFailure(.connect, "The provider did not complete the TLS handshake in time", neverReachedUpstream: true)))
            self.close()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        events = nil
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

    // MARK: Requests

    func start(
        _ head: HTTPRequestHead, body: ByteBuffer, connection: UpstreamConnection, promise: EventLoopPromise<UpstreamResponseStart>
    ) {
        guard case .idle = state, let context else {
            if case .closed = state {
                promise.fail(
                    UpstreamFailure(
                        .disconnected, "The provider closed the connection before the request was sent", neverReachedUpstream: true))
            } else {
                promise.fail(UpstreamFailure(.connect, "The upstream connection is busy", neverReachedUpstream: true))
            }
            return
        }
        exchange += 1
        let exchange = self.exchange
        state = .awaitingHead(promise, connection, requestKeepAlive: head.isKeepAlive)
        demand = true
        requestWritten = false
        // A head the HTTP encoder refuses (a header value with a line break) fails its promise
        // before anything is sent.
        let headWritten = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(.head(head)), promise: headWritten)
        if body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: written)
        headWritten.futureResult.assumeIsolated().whenFailure { [weak self] error in
            self?.failRequest(
                exchange, UpstreamFailure(.connect, "The request to the provider could not be sent: \(error)", neverReachedUpstream: true))
        }
        written.futureResult.assumeIsolated().whenComplete { [weak self] result in
            guard let self, exchange == self.exchange else { return }
            switch result {
            case .success: self.requestWritten = true
            case .failure(let error):
                // Not all of the request left: the upstream cannot have acted on it.
                self.failRequest(
                    exchange, UpstreamFailure(.connect, "Could not send the request to the provider: \(error)", neverReachedUpstream: true))
            }
        }
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    /// A request that could not be sent fails its exchange, if that exchange still waits for its head.
    private func failRequest(_ exchange: Int, _ failure: UpstreamFailure) {
        guard exchange == self.exchange, case .awaitingHead = state else { return }
        fail(failure)
    }

    /// The caller of `start` was cancelled before the head arrived: only then, and only for its
    /// own exchange, is the connection closed.
    func cancel(_ promise: EventLoopPromise<UpstreamResponseStart>) {
        guard case .awaitingHead(let waiting, _, _) = state, waiting.futureResult === promise.futureResult else { return }
        fail(UpstreamFailure(.disconnected, "The call was cancelled"))
    }

    // MARK: Responses

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .awaitingHead(let promise, let connection, let requestKeepAlive) = state else {
                close()  // an answer nobody asked for: not a connection to trust
                return
            }
            if head.status == .switchingProtocols {
                fail(UpstreamFailure(.malformed, "The provider tried to switch protocols"))
                return
            }
            // A body that ends only when the connection closes leaves nothing to reuse.
            let framed = head.headers.contains(name: "content-length") || head.headers.contains(name: "transfer-encoding")
            let sequence = UpstreamBodySequence.makeSequence(
                backPressureStrategy: Self.watermarks, finishOnDeinit: false,
                delegate: Demand(handler: self, eventLoop: context.eventLoop, exchange: exchange))
            state = .streaming(sequence.source, keepAlive: requestKeepAlive && head.isKeepAlive && framed)
            promise.succeed(UpstreamResponseStart(head: head, body: sequence.sequence, connection: connection, exchange: exchange))
        case .body(let buffer):
            switch state {
            case .streaming: batch.append(buffer)
            case .discarding(let keepAlive, let bytesLeft, let timeout):
                guard bytesLeft >= buffer.readableBytes else {
                    timeout.cancel()
                    close()
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
                finishExchange(keepAlive: keepAlive)
                source.finish()
            case .discarding(let keepAlive, _, let timeout):
                timeout.cancel()
                finishExchange(keepAlive: keepAlive)
            default:
                return
            }
        }
    }

    /// The response ended: the connection serves again, or closes.
    private func finishExchange(keepAlive: Bool) {
        guard keepAlive && requestWritten else {
            close()
            return
        }
        state = .idle
        events?.reusable()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .streaming(let source, _) = state { flushBatch(source) }
        context.fireChannelReadComplete()
    }

    private func flushBatch(_ source: UpstreamBodySequence.Source) {
        guard !batch.isEmpty else { return }
        let result = source.yield(contentsOf: batch)
        batch.removeAll(keepingCapacity: true)
        // `.dropped` means the reader is gone; its termination signal closes the connection.
        if result == .stopProducing { demand = false }
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
            close()
            source.finish()
            return
        }
        let timeout = context.eventLoop.assumeIsolated().scheduleTask(in: Self.discardLimits.time) { [weak self] in
            guard let self, case .discarding = self.state else { return }
            self.close()
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
        fail(UpstreamFailure(.disconnected, "The reader stopped"))
    }

    /// The call that made this connection was stopped before it sent anything.
    func abortConnecting() {
        guard exchange == 0 else { return }
        close()
    }

    /// The call was stopped from outside (`UpstreamAbort`) while its body streamed.
    func abort(exchange: Int) {
        guard exchange == self.exchange, case .streaming = state else { return }
        fail(UpstreamFailure(.disconnected, "The call was stopped"))
    }

    // MARK: Failures and closing

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settleReady(.failure(UpstreamFailure(.connect, "Could not connect to the provider securely: \(error)", neverReachedUpstream: true)))
        fail(UpstreamFailure(.disconnected, "The provider connection failed: \(error)"))
        close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        settleReady(
            .failure(UpstreamFailure(.connect, "The provider closed the connection while it was being made", neverReachedUpstream: true)))
        fail(UpstreamFailure(.disconnected, "The provider closed the connection"))
        state = .closed
        reportClosed()
        context.fireChannelInactive()
    }

    /// Ends the exchange in progress, if any, with `failure`, and closes the connection.
    private func fail(_ failure: UpstreamFailure) {
        switch state {
        case .awaitingHead(let promise, _, _):
            var failure = failure
            if !failure.neverReachedUpstream && failure.kind == .disconnected {
                failure.message = "The provider closed the connection without answering"
            }
            close()
            promise.fail(failure)
        case .streaming(let source, _):
            batch.removeAll()
            close()
            source.finish(failure)
        case .discarding(_, _, let timeout):
            timeout.cancel()
            close()
        case .idle, .closed:
            break
        }
    }

    /// Closes the connection; from now on it serves nothing.
    private func close() {
        guard let context else {
            state = .closed
            return
        }
        if case .closed = state { return }
        state = .closed
        context.close(promise: nil)
    }

    /// Tells the pool once, and lets go of its callbacks (which hold this handler's connection).
    private func reportClosed() {
        guard !reportedClosed else { return }
        reportedClosed = true
        let events = self.events
        self.events = nil
        events?.closed()
    }

    /// Forwards the body sequence's demand to the handler, on its event loop.
    struct Demand: NIOAsyncSequenceProducerDelegate {
        let handler: UpstreamExchangeHandler
        let eventLoop: any EventLoop
        let exchange: Int

        func produceMore() {
            let (handler, exchange) = (self.handler, self.exchange)
            eventLoop.runNowOrSoon { handler.resumeReading(exchange: exchange) }
        }

        func didTerminate() {
            let (handler, exchange) = (self.handler, self.exchange)
            eventLoop.runNowOrSoon { handler.consumerTerminated(exchange: exchange) }
        }
    }
}
