import NIOCore
import SignalboxCore

/// Embeddings calls in each upstream format that has them: OpenAI's `POST …/embeddings` (also
/// Azure's and Mistral's) and Gemini's `…:batchEmbedContents`. Answers are not streamed.
public enum EmbeddingsWire {
    /// What an upstream answered: one vector per input, in order, and the prompt tokens it
    /// counted (nil when it reports none, as Gemini does).
    public struct Answer: Sendable {
        public var vectors: [[Float]]
        public var promptTokens: Int?
    }

    /// Gemini's `batchEmbedContents` takes at most this many texts a call.
    public static let geminiBatch = 100

    /// The upstream requests for `input` at `attempt`'s endpoint, with how many inputs each
    /// carries (one for OpenAI's format; Gemini's in batches of 100); nil for a format (or an
    /// input) the endpoint cannot take. `dimensions` is sent only to a model that can shorten
    /// its vectors, and only when it asks for shorter ones.
    public static func requests(
        _ input: ChatRequest.EmbeddingsInput, attempt: PlannedAttempt, apiKey: String?
    ) -> [(request: UpstreamRequest, inputs: Int)]? {
        let base = attempt.provider.baseURL.hasSuffix("/") ? String(attempt.provider.baseURL.dropLast()) : attempt.provider.baseURL
        let model = attempt.model
        let dimensions = input.dimensions.flatMap { model.reducibleDimensions && $0 != model.embeddingDimensions ? $0 : nil }
        switch attempt.provider.format {
        case .openai:
            var body: JSONObject = ["model": .string(attempt.endpoint.upstreamModel), "encoding_format": "float"]
            switch input.items {
            case .texts(let texts): body["input"] = .array(texts.map { .string($0) })
            case .tokens(let lists): body["input"] = .array(lists.map { .array($0.map { .int(Int64($0)) }) })
            }
            if let dimensions { body["dimensions"] = .int(Int64(dimensions)) }
            var headers = [("content-type", "application/json")]
            if let apiKey { headers.append(("authorization", "Bearer \(apiKey)")) }
            let request = UpstreamRequest(
                url: base + "/embeddings", headers: headers, body: ByteBuffer(bytes: JSONWriter.bytes(.object(body))))
            return [(request, input.count)]
        case .gemini:
            guard case .texts(let texts) = input.items else { return nil }
            let name =
                attempt.endpoint.upstreamModel.hasPrefix("models/")
                ? attempt.endpoint.upstreamModel : "models/" + attempt.endpoint.upstreamModel
            var headers = [("content-type", "application/json")]
            if let apiKey { headers.append(("x-goog-api-key", apiKey)) }
            return stride(from: 0, to: texts.count, by: geminiBatch).map { start in
                let batch = texts[start..<min(start + geminiBatch, texts.count)]
                let requests: [JSONValue] = batch.map { text in
                    var request: JSONObject = ["model": .string(name), "content": ["parts": [["text": .string(text)]]]]
                    if let dimensions { request["outputDimensionality"] = .int(Int64(dimensions)) }
                    return .object(request)
                }
                let request = UpstreamRequest(
                    url: base + "/\(name):batchEmbedContents", headers: headers,
                    body: ByteBuffer(bytes: JSONWriter.bytes(["requests": .array(requests)])))
                return (request, batch.count)
            }
        case .anthropic:
            return nil
        }
    }

    /// Reads a 2xx answer: as many vectors as inputs, each `dimensions` long, every value a
    /// finite number; anything else is a malformed answer (and another endpoint may be tried).
    public static func answer(_ body: ByteBuffer, format: WireFormat, inputs: Int, dimensions: Int) throws(UpstreamFailure) -> Answer {
        guard let json = try? JSONParser.parse(body.readableBytesView) else {
            throw UpstreamFailure(
                .malformed, "Provider sent an embeddings answer that is not JSON", raw: String(buffer: body).prefix(2048).description)
        }
        let lists: [JSONValue]?
        var tokens: Int?
        switch format {
        case .openai:
            // `data` may come in any order: `index` says where each belongs.
            let data = json["data"]?.arrayValue ?? []
            var ordered = [JSONValue?](repeating: nil, count: data.count)
            for (position, item) in data.enumerated() {
                let index = item["index"]?.intValue ?? position
                if (0..<ordered.count).contains(index) { ordered[index] = item["embedding"] }
            }
            lists = ordered.allSatisfy { $0 != nil } ? ordered.compactMap { $0 } : nil
            tokens = json["usage"]?["prompt_tokens"]?.intValue
        case .gemini:
            lists = (json["embeddings"]?.arrayValue ?? json["embedding"].map { [$0] })?.compactMap { $0["values"] }
        case .anthropic:
            lists = nil
        }
        guard let lists, lists.count == inputs else {
            throw UpstreamFailure(.malformed, "Provider answered \(lists?.count ?? 0) embeddings for \(inputs) inputs")
        }
        var vectors: [[Float]] = []
        vectors.reserveCapacity(inputs)
        for list in lists {
            guard let values = list.arrayValue, values.count == dimensions else {
                throw UpstreamFailure(.malformed, "Provider answered a vector of \(list.arrayValue?.count ?? 0) values, not \(dimensions)")
            }
            var vector: [Float] = []
            vector.reserveCapacity(dimensions)
            for value in values {
                guard let number = value.numericValue.map(Float.init), number.isFinite else {
                    throw UpstreamFailure(.malformed, "Provider answered a vector with a value that is not a finite float")
                }
                vector.append(number)
            }
            vectors.append(vector)
        }
        return Answer(vectors: vectors, promptTokens: tokens)
    }

    /// The router's own count where the upstream reports none: about four ASCII bytes per token
    /// and one token per other character (a CJK character is one or more tokens, not a
    /// quarter of three bytes), at least one per input; or the ids given.
    public static func estimatedTokens(_ input: ChatRequest.EmbeddingsInput) -> Int {
        switch input.items {
        case .texts(let texts):
            texts.reduce(0) { total, text in
                let ascii = text.utf8.reduce(0) { $0 + ($1 < 0x80 ? 1 : 0) }
                let others = text.unicodeScalars.reduce(0) { $0 + ($1.isASCII ? 0 : 1) }
                return total + max(1, (ascii + 3) / 4 + others)
            }
        case .tokens(let lists): lists.reduce(0) { $0 + $1.count }
        }
    }
}
