import SignalboxCore

/// An error as the client sees it: `{"error":{"code":<status>,"message":…,"metadata":…}}`.
///
/// Every failure in Signalbox ends as one of these, mapped once at the edge. The status is
/// also the HTTP status when the error happens before any output was sent.
public struct APIError: Error, Sendable, Hashable, CustomStringConvertible {
    public var statusCode: Int
    public var message: String
    public var metadata: JSONObject?
    /// Extra response headers (e.g. `Retry-After`).
    public var headers: [(String, String)]

    public init(status: Int, message: String, metadata: JSONObject? = nil, headers: [(String, String)] = []) {
        self.statusCode = status
        self.message = message
        self.metadata = metadata
        self.headers = headers
    }

    public static func == (lhs: APIError, rhs: APIError) -> Bool {
        lhs.statusCode == rhs.statusCode && lhs.message == rhs.message && lhs.metadata == rhs.metadata
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(statusCode)
        hasher.combine(message)
    }

    public var description: String { "\(statusCode): \(message)" }

    /// The stable error type name OpenRouter puts in `metadata.error_type`: the cause when the
    /// error names one in `metadata.reason` (a 503 from the ledger is not a provider's), else
    /// what its status means here.
    public var errorType: String {
        if let reason = metadata?["reason"]?.stringValue, let type = Self.typeByReason[reason] { return type }
        switch statusCode {
        case 400: return "invalid_request"
        case 401: return "authentication"
        case 402: return "payment_required"
        case 403: return "permission_denied"
        case 404: return "not_found"
        case 405: return "method_not_allowed"
        case 408: return "timeout"
        case 409: return "conflict"
        case 413: return "payload_too_large"
        case 422: return "unprocessable"
        case 429: return "rate_limit_exceeded"
        case 499: return "client_closed_request"
        case 502: return "provider_unavailable"
        case 503: return "service_unavailable"
        case 504: return "timeout"
        default: return statusCode >= 500 ? "server" : "invalid_request"
        }
    }

    /// `metadata.reason` → error type, for the causes that share a status with others.
    static let typeByReason: [String: String] = [
        "ledger_unavailable": "ledger_unavailable", "settlement_backlog": "ledger_unavailable",
        "region_unavailable": "region_unavailable", "not_ready": "node_not_ready", "not_joined": "node_not_ready",
        "node_id_conflict": "node_not_ready", "body_budget_full": "overloaded", "no_credentials": "no_provider_credentials",
    ]

    /// The error body, with `metadata.error_type` filled in.
    public var body: JSONValue {
        var meta = metadata ?? JSONObject()
        if meta["error_type"] == nil { meta["error_type"] = .string(errorType) }
        return ["error": ["code": .int(Int64(statusCode)), "message": .string(message), "metadata": .object(meta)]]
    }

    public static func badRequest(_ message: String, metadata: JSONObject? = nil) -> APIError {
        APIError(status: 400, message: message, metadata: metadata)
    }

    public static func unauthorized(_ message: String = "No auth credentials found") -> APIError {
        APIError(status: 401, message: message)
    }

    public static func notFound(_ message: String, metadata: JSONObject? = nil) -> APIError {
        APIError(status: 404, message: message, metadata: metadata)
    }

    public static func internalError(_ message: String = "Internal server error") -> APIError {
        APIError(status: 500, message: message)
    }
}
