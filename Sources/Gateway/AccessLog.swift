import Foundation
import Logging
import SignalboxCore

/// One line per model request, under the logger `signalbox.access` (Docs/operations.md): who
/// (key id, account), what (route, model, provider), how it went (status, outcome, attempts,
/// tokens, cost, time to first token, total time). Never the prompt, the completion or a key.
/// A request that ran writes its line when it settles; one refused before it ran writes it then.
public struct AccessLog: Sendable {
    let logger: Logger?

    /// `enabled: false` writes nothing (`--no-access-log`).
    public init(enabled: Bool, level: Logger.Level = .info) {
        if enabled {
            var logger = Logger(label: "signalbox.access")
            logger.logLevel = level
            self.logger = logger
        } else {
            logger = nil
        }
    }

    /// How a request that ran ended.
    enum Outcome: String {
        case success, failed, cancelled

        /// The status the client was answered with.
        var status: Int { self == .success ? 200 : self == .cancelled ? 499 : 502 }
    }

    func settled(_ record: GenerationRecord, outcome: Outcome, streamed: Bool) {
        guard let logger else { return }
        logger.info(
            "request",
            metadata: [
                "generation": "\(record.id)", "key": "\(record.keyID ?? "")", "account": "\(record.accountID)",
                "model": "\(record.model)", "provider": "\(record.providerTag ?? "")", "status": "\(outcome.status)",
                "outcome": "\(outcome.rawValue)", "attempts": "\(record.attempts.count)", "streamed": "\(streamed)",
                "tokens_in": "\(record.usage.promptTokens)", "tokens_out": "\(record.usage.completionTokens)",
                "cost": "\(record.cost.decimalString)", "first_token_ms": "\(record.latencyMs)",
                "total_ms": "\(record.latencyMs + record.generationTimeMs)", "finish_reason": "\(record.finishReason ?? "")",
            ])
    }

    /// A request refused before any attempt ran (bad input, no credit, a limit, no route).
    func refused(route: String, key: KeyRecord, model: String?, error: APIError, started: ContinuousClock.Instant) {
        guard let logger else { return }
        logger.info(
            "request",
            metadata: [
                "route": "\(route)", "key": "\(key.id)", "account": "\(key.accountID)", "model": "\(model ?? "")",
                "status": "\(error.statusCode)", "outcome": "refused", "error_type": "\(error.errorType)", "attempts": "0",
                "cost": "0", "total_ms": "\((ContinuousClock.now - started) / .milliseconds(1))",
            ])
    }
}
