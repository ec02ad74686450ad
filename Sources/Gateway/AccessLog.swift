import Foundation
import Logging
import SignalboxCore

/// One line per model request, under the logger `signalbox.access` (Docs/operations.md): who
/// (key id, account), what (route, model, provider), how it went (status, outcome, attempts,
/// tokens, cost, time to first token, total time). Never the prompt, the completion or a key.
/// A request that ran writes its line when it settles; one refused before it ran writes it then.
public struct AccessLog: Sendable {
    let logger: Logger?

    /// `enabled: false` writes nothing (`--no-access-log`, or a log level above `info`).
    public init(enabled: Bool) {
        logger = enabled ? Logger(label: "signalbox.access") : nil
    }

    /// How a request that ran ended.
    enum Outcome: Sendable {
        case success
        /// Every attempt failed; the client was answered with `status`.
        case failed(status: Int)
        case cancelled

        var name: String {
            switch self {
            case .success: "success"
            case .failed: "failed"
            case .cancelled: "cancelled"
            }
        }

        /// The status the client was answered with (499: the client went away).
        var status: Int {
            switch self {
            case .success: 200
            case .failed(let status): status
            case .cancelled: 499
            }
        }
    }

    /// A client-given string as a log field: at most 200 characters, on one line.
    static func field(_ text: String?) -> String {
        guard let text else { return "" }
        let line = text.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        return line.count > 200 ? String(line.prefix(200)) + "…" : line
    }

    func settled(_ record: GenerationRecord, outcome: Outcome, streamed: Bool) {
        guard let logger else { return }
        logger.info(
            "request",
            metadata: [
                "generation": "\(record.id)", "key": "\(record.keyID ?? "")", "account": "\(record.accountID)",
                "model": "\(record.model)", "provider": "\(record.providerTag ?? "")", "status": "\(outcome.status)",
                "outcome": "\(outcome.name)", "attempts": "\(record.attempts.count)", "streamed": "\(streamed)",
                "tokens_in": "\(record.usage.promptTokens)", "tokens_out": "\(record.usage.completionTokens)",
                "cost": "\(record.cost.decimalString)", "first_token_ms": "\(record.latencyMs)",
                "total_ms": "\(record.latencyMs + record.generationTimeMs)", "finish_reason": "\(record.finishReason ?? "")",
            ])
    }

    /// A request answered without running: a replay of a stored answer (`outcome: replayed`), or a
    /// request passed to its region's node (`outcome: forwarded`; that node writes the full line).
    func answered(route: String, key: KeyRecord, model: String?, outcome: String, status: Int, started: ContinuousClock.Instant) {
        guard let logger else { return }
        logger.info(
            "request",
            metadata: [
                "route": "\(route)", "key": "\(key.id)", "account": "\(key.accountID)", "model": "\(Self.field(model))",
                "status": "\(status)", "outcome": "\(outcome)", "attempts": "0", "cost": "0",
                "total_ms": "\((ContinuousClock.now - started) / .milliseconds(1))",
            ])
    }

    /// A request refused before any attempt ran (bad input, no credit, a limit, no route).
    func refused(route: String, key: KeyRecord, model: String?, error: APIError, started: ContinuousClock.Instant) {
        guard let logger else { return }
        logger.info(
            "request",
            metadata: [
                "route": "\(route)", "key": "\(key.id)", "account": "\(key.accountID)", "model": "\(Self.field(model))",
                "status": "\(error.statusCode)", "outcome": "refused", "error_type": "\(error.errorType)", "attempts": "0",
                "cost": "0", "total_ms": "\((ContinuousClock.now - started) / .milliseconds(1))",
            ])
    }
}
