import Alerts
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import SignalboxCore
import Testing

/// Deliveries are signed, retried on 5xx and network errors (not on other 4xx), bounded, and logged.
@Suite struct AlertDispatcherTests {
    /// Answers each post with the next scripted status (or throws for `nil`), and keeps what it got.
    final class ScriptedPoster: WebhookPoster, Sendable {
        let answers: NIOLockedValueBox<[Int?]>
        let received = NIOLockedValueBox<[(headers: [(String, String)], body: [UInt8])]>([])
        init(_ answers: [Int?]) { self.answers = NIOLockedValueBox(answers) }

        func post(url: String, headers: [(String, String)], body: [UInt8], timeout: Duration) async throws -> Int {
            received.withLockedValue { $0.append((headers, body)) }
            let answer = answers.withLockedValue { $0.isEmpty ? 200 : $0.removeFirst() }
            guard let answer else { throw URLError(.cannotConnectToHost) }
            return answer
        }
    }

    let secret = Array("a-signing-secret-of-32-bytes!!!!".utf8)
    let event = AlertEvent(id: "node.dead:b:7", kind: .nodeDead, summary: "Node b died", data: ["member": "b"])

    func dispatcher(_ poster: ScriptedPoster, format: AlertWebhook.Format = .signalbox, queueSize: Int = 10) -> AlertDispatcher {
        var settings = AlertSettings(webhooks: [AlertWebhook(url: "http://hooks.test/alerts", secret: secret, format: format)])
        settings.queueSize = queueSize
        settings.maxAttempts = 4
        return AlertDispatcher(
            settings: settings, node: "a", region: "eu", poster: poster, logger: Logger(label: "test"), sleep: { _ in })
    }

    func waitUntil(_ condition: () -> Bool) async throws {
        for _ in 0..<500 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
        #expect(condition())
    }

    func running(_ dispatcher: AlertDispatcher, _ body: () async throws -> Void) async throws {
        let task = Task { try await dispatcher.run() }
        defer { task.cancel() }
        try await body()
    }

    @Test func aDeliveryIsSignedOverTheTimestampAndBodyAndRetriedAfterTwo500s() async throws {
        let poster = ScriptedPoster([500, 500, 200])
        let alerts = dispatcher(poster)
        try await running(alerts) {
            alerts.emit(event)
            try await waitUntil { alerts.deliveries.first?.status == "delivered" }
        }
        let tries = poster.received.withLockedValue { $0 }
        #expect(tries.count == 3)
        let record = try #require(alerts.deliveries.first)
        #expect(record.attempts == 3 && record.lastResponse == 200 && record.destination == "http://hooks.test")
        for (headers, body) in tries {
            let fields = Dictionary(headers, uniquingKeysWith: { $1 })
            let timestamp = try #require(fields["X-Signalbox-Timestamp"])
            var mac = HMAC<SHA256>(key: SymmetricKey(data: secret))
            mac.update(data: Array(timestamp.utf8) + Array(".".utf8) + body)
            let expected = "v1=" + mac.finalize().map { String(format: "%02x", $0) }.joined()
            #expect(fields["X-Signalbox-Signature"] == expected)
            #expect(fields["X-Signalbox-Event-Id"] == "node.dead:b:7" && fields["X-Signalbox-Delivery"] == record.id)
            let json = try JSONParser.parse(body)
            #expect(json["type"] == "node.dead" && json["id"] == "node.dead:b:7" && json["node"] == "a")
        }
    }

    @Test func aRefusalOtherThan5xxOr429IsNotRetried() async throws {
        let poster = ScriptedPoster([400])
        let alerts = dispatcher(poster)
        try await running(alerts) {
            alerts.emit(event)
            try await waitUntil { alerts.deliveries.first?.status == "failed" }
        }
        #expect(poster.received.withLockedValue { $0.count } == 1)
    }

    @Test func aWebhookThatNeverAnswersIsTriedMaxAttemptsTimes() async throws {
        let poster = ScriptedPoster([nil, nil, nil, nil, nil])
        let alerts = dispatcher(poster)
        try await running(alerts) {
            alerts.emit(event)
            try await waitUntil { alerts.deliveries.first?.status == "failed" }
        }
        #expect(poster.received.withLockedValue { $0.count } == 4)
        #expect(alerts.deliveries.first?.lastError != nil)
    }

    @Test func theQueueIsBoundedAndWhatDoesNotFitIsDroppedAndLogged() async throws {
        let alerts = dispatcher(ScriptedPoster([]), queueSize: 2)
        // Not running: nothing is taken off the queue.
        for index in 0..<5 { alerts.emit(AlertEvent(id: "e\(index)", kind: .overage, summary: "s", data: [:])) }
        let statuses = alerts.deliveries.map(\.status)
        #expect(statuses.filter { $0 == "pending" }.count == 2 && statuses.filter { $0 == "dropped" }.count == 3)
    }

    @Test func aCriticalAlertDisplacesALesserOneFromAFullQueue() {
        let alerts = dispatcher(ScriptedPoster([]), queueSize: 2)
        alerts.emit(AlertEvent(id: "w1", kind: .nodeLeft, summary: "s", data: [:]))
        alerts.emit(AlertEvent(id: "w2", kind: .nodeLeft, summary: "s", data: [:]))
        alerts.emit(event)  // node.dead: critical
        let byEvent = Dictionary(alerts.deliveries.map { ($0.eventID, $0.status) }, uniquingKeysWith: { $1 })
        #expect(byEvent == ["w1": "dropped", "w2": "pending", "node.dead:b:7": "pending"])
    }

    @Test func overagesAreHeldBackToOneAMinutePerEndpoint() {
        let clock = NIOLockedValueBox(Date(timeIntervalSince1970: 1_000))
        let alerts = AlertDispatcher(
            settings: AlertSettings(webhooks: [AlertWebhook(url: "http://hooks.test/a", secret: secret)]), node: "a", region: "eu",
            poster: ScriptedPoster([]), logger: Logger(label: "test"), sleep: { _ in }, now: { clock.withLockedValue { $0 } })
        func overage(_ id: String, _ endpoint: String) -> AlertEvent {
            AlertEvent(id: id, kind: .overage, summary: "s", data: ["endpoint": .string(endpoint)])
        }
        for index in 0..<5 { alerts.emit(overage("o\(index)", "openai")) }
        alerts.emit(overage("x", "azure"))
        #expect(Set(alerts.deliveries.map(\.eventID)) == ["o0", "x"])
        clock.withLockedValue { $0 += 61 }
        alerts.emit(overage("o5", "openai"))
        #expect(alerts.deliveries.first?.eventID == "o5")
    }

    @Test func aSlackWebhookGetsText() async throws {
        let poster = ScriptedPoster([])
        let alerts = dispatcher(poster, format: .slack)
        try await running(alerts) {
            alerts.emit(event)
            try await waitUntil { alerts.deliveries.first?.status == "delivered" }
        }
        let body = try JSONParser.parse(try #require(poster.received.withLockedValue { $0.first?.body }))
        #expect(body["text"]?.stringValue?.contains("node.dead") == true)
    }

    @Test func settingsNameTheKeyTheyCannotUse() {
        let cases: [(String, () throws -> AlertSettings)] = [
            ("alerts.webhooks[0].url", { try make(url: "hooks.test/x") }),
            ("alerts.webhooks[0].secret_env", { try make(env: [:]) }),
            ("alerts.webhooks[0].format", { try make(format: "teams") }),
            ("alerts.webhooks[0].events[0]", { try make(events: ["node.exploded"]) }),
            ("alerts.balance_below_usd", { try make(balance: "-1") }),
        ]
        for (key, build) in cases {
            let error = #expect(throws: AlertSettingsError.self) { try build() }
            #expect(error?.description.contains(key) == true, "\(key): \(error?.description ?? "")")
        }
    }

    func make(
        url: String = "https://hooks.test/a", env: [String: String] = ["SIGNALBOX_ALERT_SECRET": "0123456789abcdef0123"],
        format: String? = nil, events: [String]? = nil, balance: String? = nil
    ) throws -> AlertSettings {
        try AlertSettings.make(
            webhooks: [(url, nil, nil, format, events)], balanceBelow: balance, spoolAgeSeconds: nil, queueSize: nil, maxAttempts: nil,
            checkIntervalSeconds: nil, environment: env, readFile: { _ in nil })
    }
}
