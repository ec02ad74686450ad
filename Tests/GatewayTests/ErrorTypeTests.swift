import SignalboxCore
import Testing

@testable import Gateway

/// Every error the router answers with, and the `metadata.error_type` a client reads from it:
/// the cause, not just the status (a 503 from the ledger is not a provider's).
@Suite("Each error the router emits carries the error type of its cause")
struct ErrorTypeTests {
    static let table: [(String, APIError, String)] = [
        ("malformed body", .badRequest("Invalid JSON"), "invalid_request"),
        ("no key", .unauthorized(), "authentication"),
        ("no credit", APIError(status: 402, message: "Insufficient credits"), "payment_required"),
        ("admin key calling a model", APIError(status: 403, message: "Admin keys cannot call models"), "permission_denied"),
        ("unknown model", PlanningError.noEndpoints(models: ["x/y"], excludedBy: []).apiError, "not_found"),
        ("wrong method", APIError(status: 405, message: "Method GET is not allowed"), "method_not_allowed"),
        ("idempotency key in use", APIError(status: 409, message: "still running"), "conflict"),
        ("body too large", RouterAPI.tooLarge(1024), "payload_too_large"),
        ("idempotency key reused", APIError(status: 422, message: "reused"), "unprocessable"),
        ("rate limited", APIError(status: 429, message: "limit"), "rate_limit_exceeded"),
        ("client went away", APIError(status: 499, message: "Client closed the request"), "client_closed_request"),
        ("internal", .internalError(), "server"),
        ("every provider failed", APIError(status: 502, message: "All 2 provider attempts failed"), "provider_unavailable"),
        ("region forwarding failed", APIError(status: 502, message: "Forwarding to region eu failed"), "provider_unavailable"),
        ("ledger unreachable", .ledgerUnavailable, "ledger_unavailable"),
        (
            "admin route past its deadline", APIError(status: 503, message: "", metadata: ["reason": "ledger_unavailable"]),
            "ledger_unavailable"
        ),
        ("settlements backlogged", APIError(status: 503, message: "", metadata: ["reason": "settlement_backlog"]), "ledger_unavailable"),
        ("pinned region unreachable", RouterAPI.outOfRegion("eu", here: "us", detail: "no node"), "region_unavailable"),
        ("node starting or draining", APIError(status: 503, message: "", metadata: ["reason": "not_ready"]), "node_not_ready"),
        ("node not joined", APIError(status: 503, message: "", metadata: ["reason": "not_joined"]), "node_not_ready"),
        ("large bodies over budget", RouterAPI.budgetFull, "overloaded"),
        (
            "no provider key", PlanningError.noCredentials(model: "m", providers: ["openai": "OPENAI_API_KEY"]).apiError,
            "no_provider_credentials"
        ),
    ]

    @Test("error types", arguments: table.indices)
    func errorType(index: Int) {
        let (cause, error, type) = Self.table[index]
        #expect(error.errorType == type, "\(cause)")
        guard case .object(let body)? = error.body["error"], case .object(let metadata)? = body["metadata"] else {
            Issue.record("no metadata")
            return
        }
        #expect(metadata["error_type"]?.stringValue == type, "\(cause)")
    }

    @Test("no router 503 says a provider is overloaded")
    func noProviderOverloaded() {
        #expect(!Self.table.contains { $0.1.statusCode == 503 && $0.2.hasPrefix("provider") })
    }
}
