import Foundation
import Ledger
import NIOConcurrencyHelpers
import Providers
import SignalboxCore
import Tracing

/// The spans a request's run adds under its request span (see `RequestTrace`): one client span
/// per upstream attempt, named after the GenAI conventions (`chat MODEL`), the relay of the
/// answer, and the settlement.
extension ChatPipeline {
    /// Starts an attempt's span and returns it with the headers that carry it upstream.
    func startAttemptSpan(_ attempt: PlannedAttempt, prepared: PreparedChat, trace: RequestTrace) -> (any Span, [(String, String)]) {
        let operation = prepared.request.embeddings == nil ? "chat" : "embeddings"
        let span = trace.child("\(operation) \(attempt.model.id)", kind: .client)
        span.updateAttributes { attributes in
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.system"] = attempt.provider.slug
            attributes["gen_ai.provider.name"] = attempt.provider.slug
            attributes["gen_ai.request.model"] = attempt.model.id
            attributes["signalbox.endpoint"] = attempt.endpoint.tag
            attributes["signalbox.provider"] = attempt.provider.name
            attributes["signalbox.generation_id"] = prepared.generationID
        }
        return (span, trace.propagation(span))
    }

    /// Ends an attempt's span with how it went; for one that answered, records the relay of its
    /// answer to the client (from its first token to its last) beside it.
    func endAttemptSpan(
        _ span: any Span, result: Result<AttemptResult, any Error>, started: ContinuousClock.Instant,
        progress: AttemptProgress, prepared: PreparedChat, trace: RequestTrace
    ) {
        let now = clock.now
        if let firstToken = progress.firstToken {
            span.attributes["signalbox.time_to_first_token_ms"] = Int((firstToken - started) / .milliseconds(1))
        }
        switch result {
        case .success(let success):
            span.updateAttributes { attributes in
                attributes["http.response.status_code"] = 200
                attributes["gen_ai.response.model"] = success.attempt.model.id
                if let usage = success.usage {
                    attributes["gen_ai.usage.input_tokens"] = usage.promptTokens
                    attributes["gen_ai.usage.output_tokens"] = usage.completionTokens
                }
                if let finish = success.finishReason { attributes["gen_ai.response.finish_reasons"] = [finish] }
                if let upstreamID = success.accumulator.upstreamID { attributes["gen_ai.response.id"] = upstreamID }
            }
            if let firstToken = success.firstTokenAt {
                trace.record("relay", from: firstToken, to: now) { relay in
                    relay.attributes["signalbox.stream"] = prepared.request.stream
                    relay.attributes["signalbox.delivered_pieces"] = success.delivered
                }
            }
        case .failure(let error):
            // A failure racing the client's departure is the departure, as `conclude` counts it.
            let failure = error is CancellationError || Task.isCancelled ? nil : Self.classify(error)
            span.updateAttributes { attributes in
                attributes["error.type"] = failure?.code ?? "cancelled"
                if case .status(let status)? = failure?.kind { attributes["http.response.status_code"] = status }
                if let usage = progress.usage {
                    attributes["gen_ai.usage.input_tokens"] = usage.promptTokens
                    attributes["gen_ai.usage.output_tokens"] = usage.completionTokens
                }
            }
            // The code, not the provider's own message (free text the router does not control).
            span.setStatus(SpanStatus(code: .error, message: failure?.code ?? "cancelled"))
        }
        span.end()
    }

    /// Runs the settlement's ledger work as the request's `settle` span, then ends the request's
    /// span with what the request cost and how it ended.
    func traceSettlement(
        _ trace: RequestTrace, generation: GenerationRecord, outcome: AccessLog.Outcome,
        _ settlement: () async -> SettlementCommitter.Receipt
    ) async {
        let span = trace.child("settle")
        span.attributes["signalbox.cost_usd"] = generation.cost.decimalString
        let receipt = await settlement()
        span.attributes["signalbox.receipt"] = "\(receipt)"
        if receipt == .rejected { span.setStatus(SpanStatus(code: .error, message: "the ledger refused the settlement")) }
        span.end()
        trace.end(status: outcome.status) { root in
            root.updateAttributes { attributes in
                attributes["signalbox.outcome"] = outcome.name
                attributes["signalbox.attempts"] = generation.attempts.count
                attributes["signalbox.cost_usd"] = generation.cost.decimalString
                attributes["gen_ai.usage.input_tokens"] = generation.usage.promptTokens
                attributes["gen_ai.usage.output_tokens"] = generation.usage.completionTokens
                if let endpoint = generation.providerTag {
                    attributes["signalbox.endpoint"] = endpoint
                    // An endpoint's tag is its provider's slug, or `slug/variant`.
                    attributes["gen_ai.system"] = String(endpoint.prefix { $0 != "/" })
                }
                attributes["gen_ai.response.model"] = generation.model
            }
        }
    }
}
