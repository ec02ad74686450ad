import Foundation
import SignalboxCore

/// One webhook alerts are posted to.
public struct AlertWebhook: Sendable, Hashable {
    public enum Format: String, Sendable, CaseIterable { case signalbox, slack }

    public var url: String
    /// The HMAC-SHA256 key the body is signed with (from `secret_env` or `secret_file`).
    public var secret: [UInt8]
    public var format: Format
    /// The event kinds sent here; all when nil.
    public var events: Set<AlertEvent.Kind>?

    public init(url: String, secret: [UInt8], format: Format = .signalbox, events: Set<AlertEvent.Kind>? = nil) {
        self.url = url
        self.secret = secret
        self.format = format
        self.events = events
    }

    func wants(_ kind: AlertEvent.Kind) -> Bool { events?.contains(kind) ?? true }
}

/// What a node alerts on and where it sends alerts (the configuration file's `alerts` section).
public struct AlertSettings: Sendable, Hashable {
    public var webhooks: [AlertWebhook]
    /// An account whose balance falls below this is reported; nil reports none.
    public var balanceBelow: Money?
    /// A settlement waiting this long in the spool is reported.
    public var spoolAge: TimeInterval = 300
    /// Deliveries waiting or under way at most; beyond, a new alert is dropped (and counted),
    /// unless it is critical and a less severe one waits: that one is dropped instead.
    public var queueSize = 1000
    /// Tries per delivery, backing off from 1 s up to 60 s between them.
    public var maxAttempts = 6
    /// How often the node looks for events (membership, circuits, new charges, the ledger).
    public var checkInterval: Duration = .seconds(5)
    /// How long one try may take.
    public var timeout: Duration = .seconds(10)

    public init(webhooks: [AlertWebhook]) { self.webhooks = webhooks }
}

/// An alert configuration a node cannot use (a start-up error naming the key).
public struct AlertSettingsError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension AlertSettings {
    /// The settings from the file's `alerts` section, checked; `environment` and `readFile` give
    /// the webhooks' secrets.
    public static func make(
        webhooks: [(url: String?, secretEnv: String?, secretFile: String?, format: String?, events: [String]?)],
        balanceBelow: String?, spoolAgeSeconds: Int?, queueSize: Int?, maxAttempts: Int?, checkIntervalSeconds: Int?,
        environment: [String: String], readFile: (String) -> String?
    ) throws -> AlertSettings {
        var hooks: [AlertWebhook] = []
        for (index, hook) in webhooks.enumerated() {
            let place = "alerts.webhooks[\(index)]"
            guard let url = hook.url else { throw AlertSettingsError("\(place).url is required") }
            guard URL.isHTTP(url)
            else { throw AlertSettingsError("\(place).url must be an http:// or https:// URL; got \(url)") }
            let secret: String
            switch (hook.secretEnv, hook.secretFile) {
            case (.some, .some): throw AlertSettingsError("\(place): give secret_env or secret_file, not both")
            case (nil, let path?):
                guard let text = readFile(path) else { throw AlertSettingsError("\(place).secret_file \(path) cannot be read") }
                secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
            case (let name, nil):
                let name = name ?? "SIGNALBOX_ALERT_SECRET"
                guard let value = environment[name] else {
                    throw AlertSettingsError("\(place).secret_env: the environment variable \(name) is not set")
                }
                secret = value.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard secret.utf8.count >= 16 else {
                throw AlertSettingsError("\(place): the signing secret must be at least 16 bytes")
            }
            let format = try hook.format.map { name -> AlertWebhook.Format in
                guard let format = AlertWebhook.Format(rawValue: name) else {
                    throw AlertSettingsError("\(place).format must be signalbox or slack; got \(name)")
                }
                return format
            }
            let events = try hook.events.map { names in
                try Set(
                    names.enumerated().map { item -> AlertEvent.Kind in
                        guard let kind = AlertEvent.Kind(rawValue: item.element) else {
                            throw AlertSettingsError(
                                "\(place).events[\(item.offset)]: unknown event \(item.element); one of "
                                    + AlertEvent.Kind.allCases.map(\.rawValue).joined(separator: ", "))
                        }
                        return kind
                    })
            }
            hooks.append(AlertWebhook(url: url, secret: Array(secret.utf8), format: format ?? .signalbox, events: events))
        }
        var settings = AlertSettings(webhooks: hooks)
        if let text = balanceBelow {
            guard let amount = Money(decimal: text), amount > .zero else {
                throw AlertSettingsError("alerts.balance_below_usd must be a positive amount of USD; got \(text)")
            }
            settings.balanceBelow = amount
        }
        func atLeast(_ value: Int?, _ minimum: Int, _ key: String) throws -> Int? {
            guard let value else { return nil }
            guard value >= minimum else { throw AlertSettingsError("alerts.\(key) must be at least \(minimum); got \(value)") }
            return value
        }
        if let seconds = try atLeast(spoolAgeSeconds, 1, "spool_age_seconds") { settings.spoolAge = TimeInterval(seconds) }
        if let size = try atLeast(queueSize, 1, "queue_size") { settings.queueSize = size }
        if let attempts = try atLeast(maxAttempts, 1, "max_attempts") { settings.maxAttempts = attempts }
        if let seconds = try atLeast(checkIntervalSeconds, 1, "check_interval_seconds") { settings.checkInterval = .seconds(seconds) }
        return settings
    }
}
