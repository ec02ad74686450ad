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

    /// The upstream request for `input` at `attempt`'s endpoint; nil for a format with no embeddings.
    public static func request(_ input: ChatRequest.EmbeddingsInput, attempt: PlannedAttempt, apiKey: String?) -> UpstreamRequest? {
        let base = attempt.provider.baseURL.hasSuffix("/") ? String(attempt.provider.baseURL.dropLast()) : attempt.provider.baseURL
        switch attempt.provider.format {
        case .openai:
            var body: JSONObject = ["model": .string(attempt.endpoint.upstreamModel), "encoding_format": "float"]
            switch input.items {
            case .texts(let texts): body["input"] = .array(texts.map { .string($0) })
            case .tokens(let lists): body["input"] = .array(lists.map { .array($0.map { .int(Int64($0)) }) })
            }
            if let dimensions = input.dimensions { body["dimensions"] = .int(Int64(dimensions)) }
            var headers = [("content-type", "application/json")]
            if let apiKey { headers.append(("authorization", "Bearer \(apiKey)")) }
            return UpstreamRequest(url: base + "/embeddings", headers: headers, body: ByteBuffer(bytes: JSONWriter.bytes(.object(body))))
        case .gemini:
            guard case .texts(let texts) = input.items else { return nil }
            let model =
                attempt.endpoint.upstreamModel.hasPrefix("models/")
                ? attempt.endpoint.upstreamModel : "models/" + attempt.endpoint.upstreamModel
            let requests: [JSONValue] = texts.map { text in
                var request: JSONObject = ["model": .string(model), "content": ["parts": [["text": .string(text)]]]]
                if let dimensions = input.dimensions { request["outputDimensionality"] = .int(Int64(dimensions)) }
                return .object(request)
            }
            var headers = [("content-type", "application/json")]
            if let apiKey { headers.append(("x-goog-api-key", apiKey)) }
            return UpstreamRequest(
                url: base + "/\(model):batchEmbedContents", headers: headers,
                body: ByteBuffer(bytes: JSONWriter.bytes(["requests": .array(requests)])))
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
                guard let number = value.numericValue, number.isFinite else {
                    throw UpstreamFailure(.malformed, "Provider answered a vector with a value that is not a finite number")
                }
                vector.append(Float(number))
            }
            vectors.append(vector)
        }
        return Answer(vectors: vectors, promptTokens: tokens)
    }

    /// The router's own count where the upstream reports none: about four bytes of UTF-8 per
    /// token, at least one per input (the estimate `count_tokens` uses), or the ids given.
    public static func estimatedTokens(_ input: ChatRequest.EmbeddingsInput) -> Int {
        switch input.items {
        case .texts(let texts): texts.reduce(0) { $0 + max(1, ($1.utf8.count + 3) / 4) }
        case .tokens(let lists): lists.reduce(0) { $0 + $1.count }
        }
    }
}
