import Node
import Testing

/// When a node exports traces, and which settings stop it at start-up.
@Suite struct TraceSettingsTests {
    @Test func tracesAreOffUntilAnEndpointIsGiven() throws {
        #expect(try TraceSettings.resolve(file: nil, environment: [:]) == nil)
        #expect(try TraceSettings.resolve(file: TraceSettings(sampler: "always_on"), environment: [:]) == nil)
        let shared = try TraceSettings.resolve(file: nil, environment: ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"])
        #expect(shared == TraceSettings())
        let traces = try TraceSettings.resolve(
            file: nil, environment: ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector/v1/traces", "OTEL_SERVICE_NAME": "edge"])
        #expect(traces?.serviceName == "edge")
        let file = TraceSettings(endpoint: "http://collector:4318/v1/traces", sampler: "traceidratio", samplerRatio: 0.25)
        #expect(try TraceSettings.resolve(file: file, environment: [:]) == file)
    }

    @Test func theSDKSwitchAndTheNoneExporterTurnTracesOff() throws {
        let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"]
        #expect(try TraceSettings.resolve(file: nil, environment: endpoint.merging(["OTEL_SDK_DISABLED": "true"]) { $1 }) == nil)
        #expect(try TraceSettings.resolve(file: nil, environment: endpoint.merging(["OTEL_TRACES_EXPORTER": "none"]) { $1 }) == nil)
    }

    @Test(arguments: [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SDK_DISABLED", "yes"),
        ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
        ("OTEL_PROPAGATORS", "b3"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
        ("OTEL_SERVICE_NAME", ""),
    ])
    func anUnusableVariableIsAnErrorNamingIt(name: String, value: String) {
        // Refused even where the variable would not turn traces on by itself.
        let error = #expect(throws: TraceSettingsError.self) { try TraceSettings.resolve(file: nil, environment: [name: value]) }
        #expect(error?.description.contains(name) == true)
    }

    @Test func anUnusableFileSettingIsAnErrorNamingTheKey() {
        let cases: [(TraceSettings, String)] = [
            (TraceSettings(endpoint: "collector:4318"), "telemetry.traces.endpoint"),
            (TraceSettings(sampler: "sometimes"), "telemetry.traces.sampler"),
            (TraceSettings(samplerRatio: 2), "telemetry.traces.sampler_ratio"),
            (TraceSettings(serviceName: ""), "telemetry.traces.service_name"),
        ]
        for (file, key) in cases {
            let error = #expect(throws: TraceSettingsError.self) { try TraceSettings.resolve(file: file, environment: [:]) }
            #expect(error?.description.contains(key) == true)
        }
    }
}
