import Foundation
import SignalboxCore

/// Every key the configuration file may hold: the one definition that `ConfigFile.load` checks
/// files against (an unknown key is an error naming the closest known one) and that
/// `signalbox config docs` prints as Docs/configuration.md's table (a test keeps them equal).
enum ConfigSchema {
    /// One setting of the file's own sections.
    struct Setting {
        /// Dotted path, e.g. `server.port`.
        let path: String
        let type: String
        let defaultValue: String
        let meaning: String
        /// The flag that overrides it, if any.
        let flag: String?
    }

    static let settings: [Setting] = [
        Setting(path: "server.host", type: "string", defaultValue: "127.0.0.1", meaning: "address to listen on", flag: "--host"),
        Setting(path: "server.port", type: "integer", defaultValue: "8080", meaning: "port to listen on", flag: "--port"),
        Setting(
            path: "server.max_body_bytes", type: "integer", defaultValue: "33554432", meaning: "largest accepted request body",
            flag: "--max-body-bytes"),
        Setting(
            path: "server.body_memory_budget_bytes", type: "integer", defaultValue: "268435456",
            meaning:
                "memory bodies over 1 MiB may take at once, counted at 6× their size; more wait their turn (up to 50 s or 80% of the body timeout, then 503)",
            flag: "--body-memory-budget"),
        Setting(
            path: "server.keep_alive_seconds", type: "integer", defaultValue: "3",
            meaning: "interval of `: SIGNALBOX PROCESSING` comments while a stream waits for its first token", flag: nil),
        Setting(
            path: "server.admin_timeout_seconds", type: "integer", defaultValue: "10",
            meaning: "how long admin and account routes wait for the ledger before answering 503 `ledger_unavailable`",
            flag: "--admin-timeout"),
        Setting(
            path: "server.header_timeout_seconds", type: "integer", defaultValue: "30",
            meaning: "a connection must send a complete request head this soon after it opens or its last response ended",
            flag: "--header-timeout"),
        Setting(
            path: "server.body_timeout_seconds", type: "integer", defaultValue: "60",
            meaning: "a request body must arrive whole this soon after its head", flag: "--body-timeout"),
        Setting(
            path: "server.idle_timeout_seconds", type: "integer", defaultValue: "30",
            meaning: "a kept-alive connection with no request in progress is closed after this long", flag: "--idle-timeout"),
        Setting(
            path: "server.max_connections_per_address", type: "integer", defaultValue: "64",
            meaning: "open connections one source address may hold; more are accepted and closed at once",
            flag: "--max-connections-per-address"),
        Setting(
            path: "server.connection_limit_exempt", type: "array of strings", defaultValue: "[]",
            meaning: "addresses or CIDRs (your load balancers) not held to the per-address limit; still counted in the total",
            flag: "--connection-limit-exempt"),
        Setting(
            path: "server.max_connections", type: "integer", defaultValue: "descriptor limit − 128",
            meaning: "open client connections in all; more are accepted and closed at once", flag: "--max-connections"),
        Setting(
            path: "server.metrics_require_admin_key", type: "boolean", defaultValue: "false",
            meaning: "`/metrics` answers only with the operator admin key", flag: "--metrics-require-admin-key"),
        Setting(
            path: "database.url", type: "string", defaultValue: "none",
            meaning:
                "the PostgreSQL ledger (`postgres://user@host:port/db?sslmode=…`); a password is better given in `SIGNALBOX_DATABASE_URL`",
            flag: "--database-url"),
        Setting(
            path: "database.ca_file", type: "string", defaultValue: "system roots",
            meaning: "PEM CA certificate(s) for `sslmode=verify-ca`/`verify-full`", flag: "--database-ca-file"),
        Setting(
            path: "database.pool_size", type: "integer", defaultValue: "20", meaning: "connections to the ledger at most",
            flag: "--database-pool-size"),
        Setting(
            path: "database.connect_timeout_seconds", type: "integer", defaultValue: "10",
            meaning: "how long one connection (TCP, TLS, sign-in) may take", flag: "--database-connect-timeout"),
        Setting(
            path: "database.statement_timeout_seconds", type: "integer", defaultValue: "3",
            meaning: "the server cancels a statement (and ends an idle transaction) after this long; 0 for none",
            flag: "--database-statement-timeout"),
        Setting(
            path: "timeouts.connect_seconds", type: "integer", defaultValue: "10", meaning: "opening a connection to a provider",
            flag: "--connect-timeout"),
        Setting(
            path: "timeouts.first_token_seconds", type: "integer", defaultValue: "60",
            meaning: "from sending a request upstream to its first token", flag: "--first-token-timeout"),
        Setting(
            path: "timeouts.stall_seconds", type: "integer", defaultValue: "30",
            meaning: "longest silence between two chunks once tokens flow", flag: "--stall-timeout"),
        Setting(
            path: "drain.delay_seconds", type: "integer", defaultValue: "10",
            meaning: "after SIGTERM, `/readyz` answers 503 while the listener still accepts for this long", flag: "--drain-delay"),
        Setting(
            path: "drain.timeout_seconds", type: "integer", defaultValue: "60",
            meaning: "then in-flight requests get this long to finish before they are cut", flag: "--drain-timeout"),
        Setting(
            path: "console.enabled", type: "boolean", defaultValue: "true",
            meaning: "serve the operator console at `/console/` (Docs/console.md)", flag: nil),
        Setting(
            path: "console.session_idle_seconds", type: "integer", defaultValue: "1800",
            meaning: "a console session unused this long ends (at least 120)", flag: nil),
        Setting(
            path: "console.session_lifetime_seconds", type: "integer", defaultValue: "43200",
            meaning: "a console session ends this long after sign-in, however much it is used", flag: nil),
        Setting(
            path: "console.secure_cookies", type: "boolean", defaultValue: "true when serving TLS",
            meaning: "mark console cookies `Secure`; set `true` behind a balancer that terminates TLS", flag: nil),
        Setting(
            path: "console.login_attempts", type: "integer", defaultValue: "10",
            meaning: "sign-in attempts one source address may make at once; then one more per `login_refill_seconds`", flag: nil),
        Setting(
            path: "console.login_refill_seconds", type: "integer", defaultValue: "30",
            meaning: "how often a throttled address gets another sign-in attempt", flag: nil),
        Setting(
            path: "console.oidc.issuer", type: "string", defaultValue: "none",
            meaning: "OIDC issuer URL for single sign-on (https; its discovery document is read at the first sign-in)", flag: nil),
        Setting(path: "console.oidc.client_id", type: "string", defaultValue: "none", meaning: "the console's OIDC client id", flag: nil),
        Setting(
            path: "console.oidc.client_secret_env", type: "string", defaultValue: "SIGNALBOX_OIDC_CLIENT_SECRET",
            meaning: "environment variable that holds the OIDC client secret", flag: nil),
        Setting(
            path: "console.oidc.redirect_url", type: "string", defaultValue: "from the request",
            meaning: "the callback URL registered with the provider: `https://<host>/console/oidc/callback`", flag: nil),
        Setting(
            path: "console.oidc.scopes", type: "array of strings", defaultValue: "[\"openid\", \"email\", \"profile\"]",
            meaning: "scopes asked for; must include `openid`", flag: nil),
        Setting(
            path: "console.oidc.groups_claim", type: "string", defaultValue: "groups",
            meaning: "ID-token claim listing the user's groups (for role mappings)", flag: nil),
        Setting(
            path: "console.oidc.display_name", type: "string", defaultValue: "single sign-on",
            meaning: "what the sign-in button says (\"Sign in with …\")", flag: nil),
        Setting(
            path: "telemetry.traces.endpoint", type: "string", defaultValue: "none (no traces)",
            meaning: "OTLP/HTTP URL spans are posted to, e.g. `http://collector:4318/v1/traces` (Docs/operations.md); "
                + "`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` also turn traces on, and win",
            flag: nil),
        Setting(
            path: "telemetry.traces.sampler", type: "string", defaultValue: "parentbased_always_on",
            meaning: "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or "
                + "parentbased_traceidratio (`OTEL_TRACES_SAMPLER` wins)", flag: nil),
        Setting(
            path: "telemetry.traces.sampler_ratio", type: "number", defaultValue: "1",
            meaning: "share of traces kept by the `traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG` wins)", flag: nil),
        Setting(
            path: "telemetry.traces.service_name", type: "string", defaultValue: "signalbox",
            meaning: "the traces' `service.name` (`OTEL_SERVICE_NAME` wins)", flag: nil),
        Setting(
            path: "alerts.webhooks", type: "array of objects", defaultValue: "[] (no alerts)",
            meaning: "where alerts are posted: `url` (http or https), `secret_env` (the variable holding the signing secret, "
                + "default `SIGNALBOX_ALERT_SECRET`) or `secret_file`, `format` (`signalbox` or `slack`), `events` "
                + "(default all; Docs/operations.md#alerts)", flag: nil),
        Setting(
            path: "alerts.balance_below_usd", type: "string (USD)", defaultValue: "none",
            meaning: "alert when an account's balance falls below this", flag: nil),
        Setting(
            path: "alerts.spool_age_seconds", type: "integer", defaultValue: "300",
            meaning: "alert when a settlement has waited this long in the node's spool", flag: nil),
        Setting(
            path: "alerts.queue_size", type: "integer", defaultValue: "1000",
            meaning: "deliveries waiting or under way at most; more are dropped (and counted)", flag: nil),
        Setting(
            path: "alerts.max_attempts", type: "integer", defaultValue: "6",
            meaning: "tries per delivery, 1 s, 2 s, 4 s … (at most 60 s) apart", flag: nil),
        Setting(
            path: "alerts.check_interval_seconds", type: "integer", defaultValue: "5",
            meaning: "how often a node looks for events", flag: nil),
        Setting(
            path: "use_simulator", type: "boolean", defaultValue: "true",
            meaning: "`false` sends requests to the providers' real base URLs (as `--real-providers`)", flag: "--real-providers"),
        Setting(
            path: "providers", type: "array", defaultValue: "[]", meaning: "providers added, or replacing shipped ones by `slug`",
            flag: nil),
        Setting(path: "models", type: "array", defaultValue: "[]", meaning: "models added, or replacing shipped ones by `id`", flag: nil),
    ]

    /// What a JSON value at some place in the file may be.
    indirect enum Shape {
        /// An object with exactly these keys known.
        case object([String: Shape])
        /// An array whose elements have this shape.
        case array(Shape)
        /// A number, string, boolean, or a list of them: nothing inside to check.
        case value
    }

    static var fileShape: Shape {
        let policy = Shape.object(Dictionary(uniqueKeysWithValues: CatalogKeys.dataPolicy.map { ($0, Shape.value) }))
        var provider = Dictionary(uniqueKeysWithValues: CatalogKeys.provider.map { ($0, Shape.value) })
        provider["data_policy"] = policy
        var endpoint = Dictionary(uniqueKeysWithValues: CatalogKeys.endpoint.map { ($0, Shape.value) })
        endpoint["pricing"] = .object(Dictionary(uniqueKeysWithValues: CatalogKeys.pricing.map { ($0, Shape.value) }))
        endpoint["data_policy"] = policy
        var model = Dictionary(uniqueKeysWithValues: CatalogKeys.model.map { ($0, Shape.value) })
        model["endpoints"] = .array(.object(endpoint))
        /// Puts `.value` at a dotted path, making the objects on the way.
        func insert(_ parts: ArraySlice<String>, into object: inout [String: Shape]) {
            guard let first = parts.first else { return }
            if parts.count == 1 {
                object[first] = .value
            } else {
                guard case .object(var inner)? = object[first] ?? .object([:]) else { return }
                insert(parts.dropFirst(), into: &inner)
                object[first] = .object(inner)
            }
        }
        var root: [String: Shape] = [:]
        for setting in settings { insert(setting.path.split(separator: ".").map(String.init)[...], into: &root) }
        root["providers"] = .array(.object(provider))
        if case .object(var alerts)? = root["alerts"] {
            alerts["webhooks"] = .array(
                .object(
                    Dictionary(uniqueKeysWithValues: ["url", "secret_env", "secret_file", "format", "events"].map { ($0, Shape.value) })))
            root["alerts"] = .object(alerts)
        }
        root["models"] = .array(.object(model))
        return .object(root)
    }

    /// One line per key the shape does not know, with the closest known key when one is near.
    static func unknownKeys(in value: Any, shape: Shape = fileShape, at path: String = "") -> [String] {
        switch (shape, value) {
        case (.object(let known), let object as [String: Any]):
            return object.keys.sorted().flatMap { key -> [String] in
                let place = path.isEmpty ? key : "\(path).\(key)"
                guard let inner = known[key] else {
                    let hint = closest(to: key, among: Array(known.keys)).map { " (did you mean \(path.isEmpty ? $0 : "\(path).\($0)")?)" }
                    return ["unknown key \(place)\(hint ?? "")"]
                }
                return unknownKeys(in: object[key]!, shape: inner, at: place)
            }
        case (.array(let element), let array as [Any]):
            return array.enumerated().flatMap { index, item in unknownKeys(in: item, shape: element, at: "\(path)[\(index)]") }
        default:
            return []  // a wrong type is the decoder's to report
        }
    }

    /// The known key nearest `key` by edit distance, if it is near enough to be a misspelling.
    static func closest(to key: String, among known: [String]) -> String? {
        var best: (key: String, distance: Int)?
        for candidate in known.sorted() {
            let distance = editDistance(key.lowercased(), candidate.lowercased())
            if distance < best?.distance ?? Int.max { best = (candidate, distance) }
        }
        guard let best, best.distance <= max(2, best.key.count / 3) else { return nil }
        return best.key
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// The environment variables the node and its tools read; others starting `SIGNALBOX_` are
    /// warned about (a misspelt `SIGNALBOX_ADMIN_KEY` would otherwise go unnoticed).
    static let environment = [
        "SIGNALBOX_DATABASE_URL", "SIGNALBOX_ADMIN_KEY", "SIGNALBOX_DEMO_KEY", "SIGNALBOX_URL", "SIGNALBOX_OIDC_CLIENT_SECRET",
        "SIGNALBOX_CONSOLE_SECRET", "SIGNALBOX_ALERT_SECRET",
        // Read by the scripts and test runners that start nodes, passed down to them harmlessly.
        "SIGNALBOX_BIN", "SIGNALBOX_TEST_DATABASE_URL",
    ]

    /// A warning per unknown `SIGNALBOX_` variable in `environment`.
    static func unknownEnvironment(_ environment: [String: String]) -> [String] {
        environment.keys.filter { $0.hasPrefix("SIGNALBOX_") && !Self.environment.contains($0) }.sorted().map { name in
            "unknown environment variable \(name) is ignored"
                + (closest(to: name, among: Self.environment).map { " (did you mean \($0)?)" } ?? "")
        }
    }

    /// The table Docs/configuration.md shows.
    static var markdownTable: String {
        var lines = ["| key | type | default | flag | meaning |", "|---|---|---|---|---|"]
        for setting in settings {
            lines.append(
                "| `\(setting.path)` | \(setting.type) | \(setting.defaultValue) | \(setting.flag.map { "`\($0)`" } ?? "") | \(setting.meaning) |"
            )
        }
        return lines.joined(separator: "\n")
    }
}
