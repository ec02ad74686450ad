import Foundation
import HTTPTypes
import NIOConcurrencyHelpers
import SignalboxCore
import Tracing

/// The spans of one model request: a server span for the request, and children for planning,
/// each upstream attempt, the relay of the answer and its settlement.
///
/// Made only when the node exports traces (`GatewayDependencies.tracer`); a request without one
/// pays a nil check per step. The request span ends once, whoever ends it: the settlement of a
/// request that ran, or the route for one that was refused, replayed or forwarded.
final class RequestTrace: Sendable {
    let tracer: any Tracer
    let root: any Span
    private let state = NIOLockedValueBox(State.routing)

    private enum State {
        /// The route owns the request span: it ends it when it answers.
        case routing
        /// An admitted request: its settlement ends the span, whenever its stream finishes.
        case running
        case ended
    }

    /// Starts the request's span as a child of the client's `traceparent`, when it sent one.
    init(tracer: any Tracer, method: HTTPRequest.Method, route: String, headers: HTTPFields) {
        self.tracer = tracer
        var context = ServiceContext.topLevel
        tracer.extract(headers, into: &context, using: HTTPFieldsExtractor())
        root = tracer.startSpan("\(method.rawValue) \(route)", context: context, ofKind: .server)
        root.updateAttributes { attributes in
            attributes["http.request.method"] = method.rawValue
            attributes["http.route"] = route
        }
    }

    /// A span under the request's.
    func child(_ name: String, kind: SpanKind = .internal) -> any Span {
        tracer.startSpan(name, context: root.context, ofKind: kind)
    }

    /// A span under the request's that already happened, from `start` to `end`.
    func record(_ name: String, from start: ContinuousClock.Instant, to end: ContinuousClock.Instant, _ describe: (any Span) -> Void) {
        let span = tracer.startSpan(name, context: root.context, ofKind: .internal, at: WallInstant(start))
        describe(span)
        span.end(at: WallInstant(end))
    }

    /// The headers that carry `span`'s context to the next hop (`traceparent`, `tracestate`).
    func propagation(_ span: any Span) -> [(String, String)] {
        var headers: [(String, String)] = []
        tracer.inject(span.context, into: &headers, using: HeaderListInjector())
        return headers
    }

    /// The request was admitted: from now on its settlement ends the span, not the route.
    func admitted() {
        state.withLockedValue { if $0 == .routing { $0 = .running } }
    }

    /// Ends the span for the route that answered, unless an admitted request's settlement will.
    func answered(status: Int, _ describe: (any Span) -> Void = { _ in }) {
        guard state.withLockedValue({ $0 == .routing }) else { return }
        end(status: status, describe)
    }

    /// Sets the request span's final attributes and ends it; later calls do nothing.
    func end(status: Int, _ describe: (any Span) -> Void = { _ in }) {
        let first = state.withLockedValue { state in
            defer { state = .ended }
            return state != .ended
        }
        guard first else { return }
        root.attributes["http.response.status_code"] = status
        if status >= 500 { root.setStatus(SpanStatus(code: .error)) }
        describe(root)
        root.end()
    }
}

/// Who asked and what for: the attributes a request span gets once the key is known.
extension RequestTrace {
    func describe(key: KeyRecord, region: String) {
        root.updateAttributes { attributes in
            attributes["signalbox.key_id"] = key.id
            attributes["signalbox.account"] = key.accountID
            attributes["signalbox.region"] = region
        }
    }

    func describe(request: ChatRequest, generationID: String) {
        root.updateAttributes { attributes in
            attributes["gen_ai.operation.name"] = request.embeddings == nil ? "chat" : "embeddings"
            attributes["gen_ai.request.model"] = request.requestedModel
            attributes["signalbox.generation_id"] = generationID
            attributes["signalbox.stream"] = request.stream
            if let maxTokens = request.maxTokens { attributes["gen_ai.request.max_tokens"] = maxTokens }
        }
    }
}

/// A `ContinuousClock` instant as the wall-clock time a tracer records.
struct WallInstant: TracerInstant {
    let nanosecondsSinceEpoch: UInt64

    init(_ instant: ContinuousClock.Instant, now: ContinuousClock.Instant = .now, wallNow: Date = Date()) {
        let age = now - instant
        let ageNanoseconds = age.components.seconds * 1_000_000_000 + age.components.attoseconds / 1_000_000_000
        let wall = Int64(wallNow.timeIntervalSince1970 * 1_000_000_000) - ageNanoseconds
        nanosecondsSinceEpoch = UInt64(max(0, wall))
    }

    static func < (lhs: WallInstant, rhs: WallInstant) -> Bool { lhs.nanosecondsSinceEpoch < rhs.nanosecondsSinceEpoch }
}

/// Reads a propagated context from a request's headers.
struct HTTPFieldsExtractor: Extractor {
    func extract(key: String, from carrier: HTTPFields) -> String? {
        HTTPField.Name(key).flatMap { carrier[$0] }
    }
}

/// Writes a propagated context as header pairs, as `UpstreamRequest` carries them.
struct HeaderListInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [(String, String)]) {
        carrier.append((key, value))
    }
}
