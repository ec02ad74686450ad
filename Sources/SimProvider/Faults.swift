import SignalboxCore

/// A fault the simulator injects into matching requests (`POST /_sim/faults`).
public struct Fault: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// Answer at once with `status` and the provider's own error body.
        case status
        /// Answer 400 with the provider's own "prompt too long for the context" error.
        case contextLength = "context_length"
        /// Accept the request and never answer.
        case timeout
        /// Close the connection without answering.
        case reset
        /// Answer 200 with a body that is not valid JSON or SSE.
        case malformed
        /// Wait `delay_ms` before the first byte, then answer normally.
        case slow
        /// Stream `after_chunks` chunks (default 2), then go silent.
        case stall
        /// Stream `after_chunks` chunks, then close the connection.
        case dropAfterChunks = "drop_after_chunks"
        /// Stream `after_chunks` chunks, then the provider's own mid-stream error event
        /// (Anthropic `overloaded_error`), then end.
        case streamError = "stream_error"
        /// Answer normally but report usage `factor` times too large (prompt and completion), as
        /// a provider whose tokenizer or billing disagrees with the router's bound would.
        case usage
        /// Ignore `max_tokens`: the answer runs to about twice the limit (plus 8 tokens).
        case overshoot
        /// Answer `status` (default 500) with the provider's error body whose message echoes the
        /// request's headers and the upstream's internals (hosts, addresses, a traceback, an
        /// organisation id, a partial key), as a misconfigured upstream or debug page would.
        case echo
    }

    public var provider: String
    public var model: String?
    public var kind: Kind
    public var status: Int?
    public var afterChunks: Int?
    public var delayMs: Int?
    /// The `usage` fault's multiplier (default 10).
    public var factor: Int?
    /// How many requests it affects; nil = until cleared.
    public var count: Int?

    public init(
        provider: String, model: String? = nil, kind: Kind, status: Int? = nil, afterChunks: Int? = nil,
        delayMs: Int? = nil, factor: Int? = nil, count: Int? = nil
    ) {
        self.factor = factor
        self.provider = provider
        self.model = model
        self.kind = kind
        self.status = status
        self.afterChunks = afterChunks
        self.delayMs = delayMs
        self.count = count
    }

    enum CodingKeys: String, CodingKey {
        case provider, model, kind, status, count, factor
        case afterChunks = "after_chunks"
        case delayMs = "delay_ms"
    }
}

/// Active faults and per-provider request counts. Shared by every request to the simulator.
public actor SimulatorState {
    private var faults: [Fault] = []
    private var requests: [String: Int] = [:]
    private var faulted: [String: Int] = [:]
    private var cachedPrefixes: Set<UInt64> = []
    /// The `traceparent` headers of the latest requests that sent one, oldest first.
    private var traceparents: [String] = []
    static let keptTraceparents = 100

    public init() {}

    public func add(_ fault: Fault) { faults.append(fault) }
    public func clearFaults() { faults.removeAll() }
    public func activeFaults() -> [Fault] { faults }

    /// Counts a request and returns the first fault that applies to it, using up one of its count.
    public func admit(provider: String, model: String, traceparent: String? = nil) -> Fault? {
        requests[provider, default: 0] += 1
        if let traceparent {
            if traceparents.count == Self.keptTraceparents { traceparents.removeFirst() }
            traceparents.append(traceparent)
        }
        guard let index = faults.firstIndex(where: { $0.provider == provider && ($0.model == nil || $0.model == model) })
        else { return nil }
        let fault = faults[index]
        if let count = fault.count {
            if count <= 1 { faults.remove(at: index) } else { faults[index].count = count - 1 }
        }
        faulted[provider, default: 0] += 1
        return fault
    }

    /// Records a cacheable prompt prefix; true when it was already cached (a cache read).
    public func cache(prefix: UInt64) -> Bool {
        !cachedPrefixes.insert(prefix).inserted
    }

    public func stats() -> JSONValue {
        let providers = Set(requests.keys).union(faulted.keys).sorted()
        return [
            "providers": .object(
                JSONObject(
                    providers.map { slug in
                        (slug, ["requests": .int(Int64(requests[slug] ?? 0)), "faulted": .int(Int64(faulted[slug] ?? 0))])
                    })),
            "traceparents": .array(traceparents.map { .string($0) }),
        ]
    }

    public func resetStats() {
        requests.removeAll()
        faulted.removeAll()
        traceparents.removeAll()
    }
}
