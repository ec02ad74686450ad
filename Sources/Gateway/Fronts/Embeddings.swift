import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SignalboxCore

/// `POST /api/v1/embeddings`: OpenAI's embeddings API for the catalog's embeddings models. The
/// request runs on the chat pipeline — planning, every `provider` preference, failover, the
/// reservation (prompt tokens only: embeddings have no output price) and settlement — with an
/// embeddings call as each attempt (`ChatPipeline.callEmbeddings`).
struct EmbeddingsSurface: ChatSurface {
    let catalog: Catalog

    /// Providers whose embeddings endpoints take token ids (OpenAI's tokenizer, OpenAI's API).
    static let takesTokenIDs: Set<String> = ["openai", "azure"]

    /// The most vector values (inputs × dimensions) one request may ask for: what the router
    /// holds of an answer while it is read, checked and written stays in the tens of megabytes.
    static let maximumValues = 1 << 20

    /// OpenAI's limit on inputs per request.
    static let maximumInputs = 2_048

    func chatRequest(from body: ByteBuffer, headers: HTTPFields) throws -> ChatRequest {
        let source = try Self.object(body)
        guard let model = source["model"]?.stringValue, !model.isEmpty else { throw InvalidRequest("'model' is required") }
        let items = try Self.items(source["input"])
        var base64 = false
        switch source["encoding_format"] {
        case nil, .null?, .string("float")?: break
        case .string("base64")?: base64 = true
        default: throw InvalidRequest("'encoding_format' must be \"float\" or \"base64\"")
        }
        var dimensions: Int?
        if let value = source["dimensions"], !value.isNull {
            guard let count = value.intValue, count >= 1 else { throw InvalidRequest("'dimensions' must be an integer ≥ 1") }
            dimensions = count
        }
        // Planning sees a chat request for the model with the router's own fields; what is
        // embedded travels in `embeddings`, and bounds the reservation's prompt tokens.
        var chat: JSONObject = ["model": .string(model), "messages": [["role": "user", "content": ""]]]
        for field in ChatRequest.Field.allCases where field.isRouterOnly {
            if let value = source[field.name] { chat[field.name] = value }
        }
        var request = try ChatRequest(json: .object(chat))
        let length = try checkLengths(of: request.models, dimensions: dimensions)
        let count: Int =
            switch items {
            case .texts(let texts): texts.count
            case .tokens(let lists): lists.count
            }
        guard count * length <= Self.maximumValues else {
            throw InvalidRequest(
                "'input': \(count) inputs of \(length) dimensions are more than \(Self.maximumValues) values a request; "
                    + "send fewer inputs per request, or ask for fewer 'dimensions'")
        }
        let input = ChatRequest.EmbeddingsInput(items: items, dimensions: dimensions, base64: base64)
        request.prompt = PromptBound(textTokens: Self.tokenBound(input))
        // Token ids mean something only to the model's own tokenizer: OpenAI's and Azure's endpoints.
        if case .tokens = items, let entry = catalog.model(id: model) {
            let tags = entry.endpoints.filter { Self.takesTokenIDs.contains($0.provider) }.map(\.tag)
            guard !tags.isEmpty else { throw InvalidRequest("'input' as token ids: \(model) has no endpoint that takes them; send text") }
            request.provider.only =
                request.provider.only.map { only in tags.filter { tag in only.contains { RoutingPlanner.slug($0, matches: tag) } } } ?? tags
        }
        request.embeddings = input
        return request
    }

    /// Every model that may serve the request must answer vectors of one length: the asked
    /// `dimensions` (each model able to give it), or, without it, the same full length — a
    /// fallback that answered another length would corrupt the client's index.
    /// Returns that length (0 when no model is known: planning then refuses the request).
    func checkLengths(of models: [String], dimensions: Int?) throws(InvalidRequest) -> Int {
        let entries = models.compactMap { id -> CatalogModel? in
            let base = [":nitro", ":floor"].first { id.hasSuffix($0) }.map { String(id.dropLast($0.count)) } ?? id
            return catalog.model(id: base)
        }.filter(\.isEmbeddings)
        if let dimensions {
            for entry in entries {
                guard let full = entry.embeddingDimensions else { continue }
                guard entry.reducibleDimensions || dimensions == full else {
                    throw InvalidRequest("'dimensions': \(entry.id) always answers \(full) dimensions")
                }
                guard dimensions <= full else { throw InvalidRequest("'dimensions' must be at most \(full) for \(entry.id)") }
            }
            return dimensions
        } else if Set(entries.compactMap(\.embeddingDimensions)).count > 1 {
            let lengths = entries.map { "\($0.id): \($0.embeddingDimensions ?? 0)" }.joined(separator: ", ")
            throw InvalidRequest("'models' answer vectors of different lengths (\(lengths)): ask for 'dimensions' they share")
        }
        return entries.first?.embeddingDimensions ?? 0
    }

    /// `input`: a string, strings, token ids, or lists of token ids; none empty.
    static func items(_ input: JSONValue?) throws(InvalidRequest) -> ChatRequest.EmbeddingsInput.Items {
        switch input {
        case .string(let text)?:
            guard !text.isEmpty else { throw InvalidRequest("'input' must not be empty") }
            return .texts([text])
        case .array(let list)? where !list.isEmpty:
            guard list.count <= maximumInputs else { throw InvalidRequest("'input' has more than \(maximumInputs) items") }
            if list.allSatisfy({ $0.stringValue != nil }) {
                let texts = list.compactMap(\.stringValue)
                if let empty = texts.firstIndex(where: \.isEmpty) { throw InvalidRequest("input[\(empty)] must not be empty") }
                return .texts(texts)
            }
            if list.allSatisfy({ $0.intValue.map { $0 >= 0 } ?? false }) { return .tokens([list.compactMap(\.intValue)]) }
            let lists = list.map { $0.arrayValue?.compactMap { $0.intValue.flatMap { $0 >= 0 ? $0 : nil } } }
            if lists.enumerated().allSatisfy({ index, ids in ids != nil && ids!.count == list[index].arrayValue?.count && !ids!.isEmpty }) {
                return .tokens(lists.compactMap { $0 })
            }
            throw InvalidRequest("'input' must be a string, an array of strings, an array of token ids, or an array of such arrays")
        case nil, .null?: throw InvalidRequest("'input' is required")
        default: throw InvalidRequest("'input' must be a non-empty string or array")
        }
    }

    /// The reservation's prompt bound: one token per UTF-8 byte and one per input, or the ids given.
    static func tokenBound(_ input: ChatRequest.EmbeddingsInput) -> Int {
        switch input.items {
        case .texts(let texts): texts.reduce(0) { $0 + $1.utf8.count + 1 }
        case .tokens(let lists): lists.reduce(0) { $0 + $1.count }
        }
    }

    func response(to completion: JSONValue, of request: ChatRequest) -> JSONValue {
        guard request.embeddings?.base64 == true, var list = completion.objectValue else { return completion }
        list["data"] = .array(
            (completion["data"]?.arrayValue ?? []).map { item in
                guard var entry = item.objectValue, let values = item["embedding"]?.arrayValue else { return item }
                entry["embedding"] = .string(Self.base64(values.map { Float($0.numericValue ?? 0) }))
                return .object(entry)
            })
        return .object(list)
    }

    /// Little-endian float32s, base64-encoded, as OpenAI's `encoding_format: base64`.
    static func base64(_ vector: [Float]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(vector.count * 4)
        for value in vector {
            let bits = value.bitPattern.littleEndian
            bytes += [UInt8(bits & 0xFF), UInt8(bits >> 8 & 0xFF), UInt8(bits >> 16 & 0xFF), UInt8(bits >> 24)]
        }
        return Data(bytes).base64EncodedString()
    }

    func makeStream(generationID: String, model: String) -> (any SurfaceStream)? { nil }

    func errorResponse(_ error: APIError) -> Response { error.jsonResponse() }
}
