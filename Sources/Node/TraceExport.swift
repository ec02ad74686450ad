import Foundation
import Logging
import OTel
import ServiceLifecycle
import Tracing

/// Where a node sends its traces: OTLP over HTTP (protobuf), off unless an endpoint is given in
/// the configuration file (`telemetry.traces.*`) or by the standard environment variables
/// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. The `OTEL_*` variables
/// win over the file, as the OpenTelemetry specification has it.
public struct TraceSettings: Sendable, Equatable {
    /// The full URL spans are posted to (`…/v1/traces`); nil takes it from the environment.
    public var endpoint: String?
    /// One of `TraceSettings.samplers`; nil samples every trace a client did not decide on.
    public var sampler: String?
    /// The ratio (0…1) for the `traceidratio` samplers.
    public var samplerRatio: Double?
    public var serviceName: String = "signalbox"

    public init(endpoint: String? = nil, sampler: String? = nil, samplerRatio: Double? = nil, serviceName: String = "signalbox") {
        self.endpoint = endpoint
        self.sampler = sampler
        self.samplerRatio = samplerRatio
        self.serviceName = serviceName
    }

    /// The samplers of the OpenTelemetry specification that a node offers.
    public static let samplers = [
        "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio",
    ]

    /// The settings a node runs with, or nil when it exports no traces. Every `OTEL_*` variable a
    /// node reads is checked here: a value it cannot use is a start-up error naming the variable
    /// (the exporter library would only log it and carry on without it).
    public static func resolve(file: TraceSettings?, environment: [String: String]) throws -> TraceSettings? {
        try checkEnvironment(environment)
        // The file's settings are checked whether or not they turn traces on.
        if let file { try file.check() }
        if environment["OTEL_SDK_DISABLED"]?.lowercased() == "true" { return nil }
        if environment["OTEL_TRACES_EXPORTER"]?.lowercased() == "none" { return nil }
        let fromEnvironment = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].contains {
            !(environment[$0] ?? "").isEmpty
        }
        guard fromEnvironment || file?.endpoint != nil else { return nil }
        var settings = file ?? TraceSettings()
        if let name = environment["OTEL_SERVICE_NAME"] { settings.serviceName = name }
        return settings
    }

    func check() throws {
        if let endpoint, !URL.isHTTP(endpoint) {
            throw TraceSettingsError("telemetry.traces.endpoint must be an http:// or https:// URL; got \(endpoint)")
        }
        if let sampler, !Self.samplers.contains(sampler) {
            throw TraceSettingsError(
                "telemetry.traces.sampler must be one of \(Self.samplers.joined(separator: ", ")); got \(sampler)")
        }
        if let samplerRatio, !(0...1).contains(samplerRatio) {
            throw TraceSettingsError("telemetry.traces.sampler_ratio must be between 0 and 1; got \(samplerRatio)")
        }
        if serviceName.isEmpty { throw TraceSettingsError("telemetry.traces.service_name must not be empty") }
    }

    static func checkEnvironment(_ environment: [String: String]) throws {
        /// `secret`: the value may hold credentials (headers), so the error does not repeat it.
        func check(_ name: String, _ valid: (String) -> Bool, _ expected: String, secret: Bool = false) throws {
            guard let value = environment[name] else { return }
            guard valid(value) else {
                throw TraceSettingsError("\(name) must be \(expected)" + (secret ? "" : "; got \"\(value)\""))
            }
        }
        let pairs = { (value: String) in
            value.split(separator: ",").allSatisfy { pair in
                let parts = pair.split(separator: "=", maxSplits: 1)
                return parts.count == 2 && !parts[0].trimmed.isEmpty && !parts[1].trimmed.isEmpty
            }
        }
        let boolean = { (value: String) in ["true", "false"].contains(value.lowercased()) }
        let milliseconds = { (value: String) in Int(value).map { $0 >= 0 } ?? false }
        try check("OTEL_SDK_DISABLED", boolean, "true or false")
        for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
            try check(name, { $0.isEmpty || URL.isHTTP($0) }, "an http:// or https:// URL")
        }
        for name in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            try check(name, { ["http/protobuf", "http/json"].contains($0) }, "http/protobuf or http/json (gRPC is not built in)")
        }
        try check("OTEL_TRACES_EXPORTER", { ["otlp", "none"].contains($0.lowercased()) }, "otlp or none")
        try check("OTEL_TRACES_SAMPLER", { samplers.contains($0) }, "one of \(samplers.joined(separator: ", "))")
        try check("OTEL_TRACES_SAMPLER_ARG", { Double($0).map { (0...1).contains($0) } ?? false }, "a number between 0 and 1")
        try check("OTEL_SERVICE_NAME", { !$0.isEmpty }, "a non-empty name")
        try check(
            "OTEL_PROPAGATORS", { $0.split(separator: ",").allSatisfy { ["tracecontext", "baggage", "none"].contains($0.trimmed) } },
            "a comma-separated list of tracecontext, baggage, none")
        for name in [
            "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            try check(name, milliseconds, "a whole number of milliseconds")
        }
        for name in ["OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] {
            try check(name, { Int($0).map { $0 >= 1 } ?? false }, "a whole number of at least 1")
        }
        for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            try check(name, pairs, "comma-separated name=value pairs, each with a name and a value", secret: true)
        }
        try check("OTEL_RESOURCE_ATTRIBUTES", pairs, "comma-separated name=value pairs")
        try check(
            "OTEL_LOG_LEVEL", { ["error", "warning", "warn", "info", "debug", "trace"].contains($0.lowercased()) },
            "error, warning, info, debug or trace")
        for signal in ["", "TRACES_"] {
            try check("OTEL_EXPORTER_OTLP_\(signal)INSECURE", boolean, "true or false")
            for file in ["CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"] {
                try check(
                    "OTEL_EXPORTER_OTLP_\(signal)\(file)", { FileManager.default.isReadableFile(atPath: $0) }, "a readable PEM file")
            }
        }
        for name in ["OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"] {
            try check(name, { ["none", "gzip"].contains($0) }, "none or gzip")
        }
    }

    /// The tracer spans go to, and the service that batches and exports them (run it in the
    /// node's service group: it sends what is left when it stops).
    public func makeExporter(nodeID: String, region: String, logger: Logger) throws -> (tracer: any Tracer, service: any Service) {
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        configuration.resourceAttributes["service.instance.id"] = nodeID
        configuration.resourceAttributes["signalbox.region"] = region
        // The exporter's own messages at warning and above: at info it logs each OTEL_* value it
        // applies, and header values may be credentials.
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        configuration.propagators = [.traceContext]
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.enabled = true
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        if let endpoint { configuration.traces.otlpExporter.endpoint = endpoint }
        let ratio = samplerRatio ?? 1
        switch sampler {
        case "always_on": configuration.traces.sampler = .alwaysOn
        case "always_off": configuration.traces.sampler = .alwaysOff
        case "traceidratio": configuration.traces.sampler = .traceIDRatio(ratio: ratio) ?? .alwaysOn
        case "parentbased_always_off": configuration.traces.sampler = .parentBasedAlwaysOff
        case "parentbased_traceidratio": configuration.traces.sampler = .parentBasedTraceIDRatio(ratio: ratio) ?? .parentBasedAlwaysOn
        default: configuration.traces.sampler = .parentBasedAlwaysOn
        }
        let backend = try OTel.makeTracingBackend(configuration: configuration)
        return (backend.factory, backend.service)
    }
}

/// Trace settings a node cannot use (a start-up error).
public struct TraceSettingsError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Substring {
    fileprivate var trimmed: String { trimmingCharacters(in: .whitespaces) }
}
