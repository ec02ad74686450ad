import SignalboxCore

/// The HTTP answer for each reason the planner found nothing to attempt: made here, at the edge,
/// from the planner's domain error.
extension PlanningError {
    var apiError: APIError {
        switch self {
        case .invalidModel(let model):
            return .badRequest("\(model) is not a valid model ID", metadata: ["model": .string(model)])
        case .noEndpoints(let models, let excludedBy):
            let detail = excludedBy.map { "\($0.filter) excluded \($0.tags.joined(separator: ", "))" }.joined(separator: "; ")
            let names = models.joined(separator: ", ")
            let message =
                detail.isEmpty
                ? "No endpoints found for \(names)."
                : "No endpoints found for \(names) that match your request: \(detail)."
            var metadata = JSONObject()
            metadata["requested_models"] = .array(models.map { .string($0) })
            metadata["excluded_by"] = .object(JSONObject(excludedBy.map { ($0.filter, .array($0.tags.map { .string($0) })) }))
            return .notFound(message, metadata: metadata)
        case .notAllowedInRegion(let model, let region, let allowed):
            return APIError(
                status: 404, message: "No endpoint for \(model) is allowed in region \(region) by its routing table",
                metadata: ["region": .string(region), "allowed": .array(allowed.map { .string($0) })])
        case .outsidePinnedRegion(let model, let region):
            return APIError(
                status: 404,
                message: "No endpoint for \(model) is in region \(region), "
                    + "where this key's requests must be served", metadata: ["region": .string(region)])
        case .wrongKind(let model, let embeddings):
            return .badRequest(
                embeddings
                    ? "\(model) is an embeddings model: send it to POST /api/v1/embeddings"
                    : "\(model) is not an embeddings model: /api/v1/embeddings takes a model whose output is embeddings (see GET /api/v1/models)",
                metadata: ["model": .string(model)])
        case .noCredentials(let model, let providers):
            return APIError(
                status: 503,
                message: "No provider endpoint can be attempted for \(model): "
                    + "no API key is configured on this node for \(Set(providers.values).sorted().joined(separator: ", "))",
                metadata: ["reason": "no_credentials", "providers": .array(providers.keys.sorted().map { .string($0) })])
        }
    }
}
