import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SignalboxCore

/// Posts one webhook request; the status it got back, or a thrown error for no answer.
public protocol WebhookPoster: Sendable {
    func post(url: String, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int
}

/// Delivers alert events to the configured webhooks: signed, retried with backoff, at most
/// `queueSize` at a time (more are dropped and counted), each recorded in a bounded log admins
/// read at `GET /api/v1/admin/alerts`.
///
/// Signing (Docs/operations.md, "Alerts"): `X-Signalbox-Timestamp` is the Unix time of the try and
/// `X-Signalbox-Signature` is `v1=` and the hex HMAC-SHA256, keyed with the webhook's secret, of
/// `TIMESTAMP.BODY`. A receiver recomputes it, compares in constant time and refuses timestamps
/// more than five minutes away; `X-Signalbox-Event-Id` is the same for every delivery of an event.
public final class AlertDispatcher: Service, Sendable {
    public let settings: AlertSettings
    let node: String
    let region: String
    let poster: any WebhookPoster
    let logger: Logger
    let sleep: @Sendable (Duration) async throws -> Void
    let now: @Sendable () -> Date
    /// Called with each delivery's outcome (`delivered`, `failed`, `dropped`) for the metrics.
    let onOutcome: @Sendable (String) -> Void
    private let state = NIOLockedValueBox(State())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    struct State {
        var pending: [Delivery] = []
        var active = 0
        var dropped = 0
        var log: [DeliveryRecord] = []
        var closed = false
        /// Throttled events (overages, per endpoint): when one was last queued, and how many were held back since.
        var throttled: [String: (last: Date, suppressed: Int)] = [:]
    }

    /// Deliveries under way at once; the rest wait their turn in the queue.
    static let concurrentDeliveries = 8
    /// An overage is reported at most once a minute per endpoint; the next report counts the ones held back.
    static let overageInterval: TimeInterval = 60
    /// Endpoints whose overage throttling is remembered at most.
    static let throttledKeys = 1_000

    struct Delivery: Sendable {
        var id: String
        var event: AlertEvent
        var webhook: AlertWebhook
    }

    /// How one delivery went, as the admin API shows it.
    public struct DeliveryRecord: Sendable, Hashable {
        public var id: String
        public var eventID: String
        public var kind: AlertEvent.Kind
        /// The webhook's origin (scheme, host, port): its path may be a secret (Slack's are).
        public var destination: String
        /// `pending`, `retrying`, `delivered`, `failed` or `dropped`.
        public var status: String
        public var attempts: Int
        public var lastResponse: Int?
        public var lastError: String?
        public var createdAt: Date
        public var updatedAt: Date

        public var json: JSONValue {
            let format = ISO8601DateFormatter()
            return [
                "id": .string(id), "event_id": .string(eventID), "type": .string(kind.rawValue), "destination": .string(destination),
                "status": .string(status), "attempts": .int(Int64(attempts)),
                "last_response": lastResponse.map { .int(Int64($0)) } ?? nil, "last_error": lastError.map { .string($0) } ?? nil,
                "created_at": .string(format.string(from: createdAt)), "updated_at": .string(format.string(from: updatedAt)),
            ]
        }
    }

    /// Deliveries the log keeps, newest last.
    static let loggedDeliveries = 500

    public init(
        settings: AlertSettings, node: String, region: String, poster: any WebhookPoster, logger: Logger,
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        now: @escaping @Sendable () -> Date = { Date() }, onOutcome: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.settings = settings
        self.node = node
        self.region = region
        self.poster = poster
        self.logger = logger
        self.sleep = sleep
        self.now = now
        self.onOutcome = onOutcome
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues the event for every webhook that wants it; never waits.
    public func emit(_ event: AlertEvent) {
        let at = now()
        guard let event = throttle(event, at: at) else { return }
        let targets = settings.webhooks.filter { $0.wants(event.kind) }
        guard !targets.isEmpty else { return }
        logger.notice("alert", metadata: ["alert": "\(event.kind.rawValue)", "event_id": "\(event.id)", "summary": "\(event.summary)"])
        for webhook in targets {
            let delivery = Delivery(id: UUID().uuidString.lowercased(), event: event, webhook: webhook)
            let (accepted, displaced) = state.withLockedValue { state -> (Bool, Delivery?) in
                guard !state.closed else {
                    Self.record(&state, delivery, status: "dropped", attempts: 0, at: at, error: "the node is shutting down")
                    return (false, nil)
                }
                var displaced: Delivery?
                if state.pending.count + state.active >= settings.queueSize {
                    // Full: a critical alert takes the place of the oldest less severe one waiting.
                    guard event.kind.severity == "critical",
                        let index = state.pending.firstIndex(where: { $0.event.kind.severity != "critical" })
                    else {
                        state.dropped += 1
                        Self.record(&state, delivery, status: "dropped", attempts: 0, at: at, error: "the alert queue is full")
                        return (false, nil)
                    }
                    displaced = state.pending.remove(at: index)
                    state.dropped += 1
                    Self.record(&state, displaced!, status: "dropped", attempts: 0, at: at, error: "displaced by a critical alert")
                }
                state.pending.append(delivery)
                Self.record(&state, delivery, status: "pending", attempts: 0, at: at)
                return (true, displaced)
            }
            if displaced != nil { onOutcome("dropped") }
            if accepted {
                wake.yield()
            } else {
                onOutcome("dropped")
                logger.warning("alert dropped", metadata: ["alert": "\(event.kind.rawValue)", "event_id": "\(event.id)"])
            }
        }
    }

    /// Overages are held back to one a minute per endpoint (a provider whose counts disagree
    /// would otherwise send one per request); the one sent says how many were held back.
    private func throttle(_ event: AlertEvent, at: Date) -> AlertEvent? {
        guard event.kind == .overage, let endpoint = event.data["endpoint"]?.stringValue else { return event }
        return state.withLockedValue { state -> AlertEvent? in
            if let entry = state.throttled[endpoint], at.timeIntervalSince(entry.last) < Self.overageInterval {
                state.throttled[endpoint]!.suppressed += 1
                return nil
            }
            var event = event
            event.data["suppressed_since_last"] = .int(Int64(state.throttled[endpoint]?.suppressed ?? 0))
            if state.throttled.count >= Self.throttledKeys, state.throttled[endpoint] == nil {
                state.throttled = state.throttled.filter { at.timeIntervalSince($0.value.last) < Self.overageInterval }
            }
            state.throttled[endpoint] = (at, 0)
            return event
        }
    }

    /// The log, newest first.
    public var deliveries: [DeliveryRecord] { state.withLockedValue { $0.log.reversed() } }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            await withGracefulShutdownHandler {
                for await _ in wakes {
                    while let delivery = take() {
                        group.addTask { await self.deliver(delivery) }
                    }
                }
            } onGracefulShutdown: {
                self.state.withLockedValue { $0.closed = true }
                self.wake.finish()
            }
            // Tries under way get two seconds; retries still waiting are given up, and what never
            // left the queue is recorded as failed.
            let deadline = ContinuousClock.now + .seconds(2)
            while state.withLockedValue({ $0.active > 0 }) && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            group.cancelAll()
            let left = state.withLockedValue { state -> [Delivery] in
                defer { state.pending.removeAll() }
                return state.pending
            }
            for delivery in left {
                finish(delivery, status: "failed", attempts: 0, response: nil, error: "the node stopped before it was sent")
                onOutcome("failed")
            }
        }
    }

    private func take() -> Delivery? {
        state.withLockedValue { state in
            guard !state.pending.isEmpty, state.active < Self.concurrentDeliveries else { return nil }
            state.active += 1
            return state.pending.removeFirst()
        }
    }

    /// Tries a delivery until it is answered 2xx, refused for good (another 4xx), or out of tries.
    func deliver(_ delivery: Delivery) async {
        defer {
            state.withLockedValue { $0.active -= 1 }
            wake.yield()  // room for the next waiting delivery
        }
        let body = delivery.event.body(format: delivery.webhook.format, node: node, region: region)
        var attempt = 0
        while true {
            attempt += 1
            let timestamp = String(Int64(now().timeIntervalSince1970))
            let headers = Self.headers(delivery, body: body, timestamp: timestamp)
            var status: Int?
            var failure: String?
            do {
                status = try await poster.post(url: delivery.webhook.url, headers: headers, body: body, timeout: settings.timeout)
            } catch {
                failure = "\(error)"
            }
            if let status, (200..<300).contains(status) {
                finish(delivery, status: "delivered", attempts: attempt, response: status, error: nil)
                onOutcome("delivered")
                return
            }
            let retryable = status.map { $0 == 408 || $0 == 429 || $0 >= 500 } ?? true
            guard retryable, attempt < settings.maxAttempts, !Task.isCancelled else {
                finish(delivery, status: "failed", attempts: attempt, response: status, error: failure)
                onOutcome("failed")
                logger.error(
                    "alert delivery failed",
                    metadata: [
                        "alert": "\(delivery.event.kind.rawValue)", "event_id": "\(delivery.event.id)", "attempts": "\(attempt)",
                        "response": "\(status.map(String.init) ?? failure ?? "")",
                    ])
                return
            }
            finish(delivery, status: "retrying", attempts: attempt, response: status, error: failure)
            do { try await sleep(Self.backoff(after: attempt)) } catch {
                finish(delivery, status: "failed", attempts: attempt, response: status, error: "shut down before the next try")
                onOutcome("failed")
                return
            }
        }
    }

    /// 1 s, 2 s, 4 s … up to 60 s, each ±20% so many nodes' retries spread out.
    static func backoff(after attempt: Int) -> Duration {
        let base = min(60.0, pow(2.0, Double(attempt - 1)))
        return .milliseconds(Int64(base * Double.random(in: 0.8...1.2) * 1000))
    }

    static func headers(_ delivery: Delivery, body: [UInt8], timestamp: String) -> [(String, String)] {
        [
            ("Content-Type", "application/json"), ("User-Agent", "signalbox-alerts"),
            ("X-Signalbox-Event", delivery.event.kind.rawValue), ("X-Signalbox-Event-Id", delivery.event.id),
            ("X-Signalbox-Delivery", delivery.id), ("X-Signalbox-Timestamp", timestamp),
            ("X-Signalbox-Signature", "v1=" + signature(secret: delivery.webhook.secret, timestamp: timestamp, body: body)),
        ]
    }

    /// The hex HMAC-SHA256 of `TIMESTAMP.BODY`.
    public static func signature(secret: [UInt8], timestamp: String, body: [UInt8]) -> String {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
        mac.update(data: Array(timestamp.utf8) + [UInt8(ascii: ".")] + body)
        return mac.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private func finish(_ delivery: Delivery, status: String, attempts: Int, response: Int?, error: String?) {
        let at = now()
        state.withLockedValue { Self.record(&$0, delivery, status: status, attempts: attempts, at: at, response: response, error: error) }
    }

    private static func record(
        _ state: inout State, _ delivery: Delivery, status: String, attempts: Int, at: Date, response: Int? = nil,
        error: String? = nil
    ) {
        if let index = state.log.lastIndex(where: { $0.id == delivery.id }) {
            state.log[index].status = status
            state.log[index].attempts = attempts
            state.log[index].lastResponse = response
            state.log[index].lastError = error
            state.log[index].updatedAt = at
            return
        }
        if state.log.count == loggedDeliveries { state.log.removeFirst() }
        state.log.append(
            DeliveryRecord(
                id: delivery.id, eventID: delivery.event.id, kind: delivery.event.kind, destination: origin(delivery.webhook.url),
                status: status, attempts: attempts, lastResponse: response, lastError: error, createdAt: at, updatedAt: at))
    }

    static func origin(_ url: String) -> String {
        guard let parsed = URL(string: url), let scheme = parsed.scheme, let host = parsed.host else { return "(invalid)" }
        return "\(scheme)://\(host)" + (parsed.port.map { ":\($0)" } ?? "")
    }
}

/// Posts webhooks with AsyncHTTPClient.
public struct HTTPWebhookPoster: WebhookPoster {
    let client: HTTPClient
    public init(client: HTTPClient) { self.client = client }

    public func post(url: String, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(ByteBuffer(bytes: body))
        let seconds = timeout.components.seconds
        let response = try await client.execute(request, timeout: .seconds(seconds))
        _ = try? await response.body.collect(upTo: 64 * 1024)  // read (and drop) the answer so the connection is reused
        return Int(response.status.code)
    }
}
