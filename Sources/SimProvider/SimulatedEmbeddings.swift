import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SignalboxCore

/// Embedding vectors as a provider would return them, made up but stable: a vector depends only
/// on the text, the model and the dimensions asked for — never on which provider serves it — and
/// has unit length. Shorter vectors are the full one cut and renormalized, as OpenAI's v3 models
/// and Gemini's do.
public enum SimulatedEmbeddings {
    /// Each known model's full length; others get 768.
    static let dimensions: [String: Int] = [
        "text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536,
        "gemini-embedding-001": 3072, "mistral-embed": 1024,
    ]

    public static func fullDimensions(of model: String) -> Int {
        dimensions[model.split(separator: "/").last.map(String.init) ?? model] ?? 768
    }

    /// The vector for `text` (or token ids, written as their decimal list) under `model`.
    public static func vector(_ text: String, model: String, dimensions: Int?) -> [Float] {
        let full = fullDimensions(of: model)
        let count = min(dimensions ?? full, full)
        let name = model.split(separator: "/").last.map(String.init) ?? model
        var state = SimulatedModel.fnv1a(name + "\u{0}" + text)
        var values: [Float] = []
        values.reserveCapacity(count)
        for _ in 0..<count {
            // SplitMix64, mapped to [-1, 1).
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            values.append(Float(Double(z >> 11) / Double(1 << 53) * 2 - 1))
        }
        let norm = values.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        return norm > 0 ? values.map { $0 / norm } : values
    }

    /// The texts of an OpenAI `input`: a string, strings, token ids, or lists of token ids.
    static func inputs(_ input: JSONValue?) -> [String]? {
        switch input {
        case .string(let text)?: return [text]
        case .array(let items)? where !items.isEmpty:
            if items.allSatisfy({ $0.stringValue != nil }) { return items.compactMap(\.stringValue) }
            if items.allSatisfy({ $0.intValue != nil }) { return [tokenText(items)] }
            if items.allSatisfy({ $0.arrayValue?.allSatisfy { $0.intValue != nil } ?? false }) {
                return items.map { tokenText($0.arrayValue ?? []) }
            }
            return nil
        default: return nil
        }
    }

    static func tokenText(_ tokens: [JSONValue]) -> String {
        tokens.compactMap { $0.intValue.map(String.init) }.joined(separator: " ")
    }

    static func floats(_ vector: [Float]) -> JSONValue { .array(vector.map { .double(Double($0)) }) }

    /// OpenAI's answer, with usage counted the simulator's way.
    static func openAIResponse(_ body: JSONValue) -> (status: HTTPResponse.Status, body: JSONValue) {
        guard let model = body["model"]?.stringValue, let texts = inputs(body["input"]) else {
            return (.badRequest, ["error": ["message": "'input' and 'model' are required", "type": "invalid_request_error"]])
        }
        let dimensions = body["dimensions"]?.intValue
        // As OpenAI: only the v3 models take `dimensions`, and not past their own length.
        if dimensions != nil && !model.hasPrefix("text-embedding-3") {
            return (
                .badRequest, ["error": ["message": "This model does not support specifying dimensions.", "type": "invalid_request_error"]]
            )
        }
        let data: [JSONValue] = texts.enumerated().map { index, text in
            ["object": "embedding", "index": .int(Int64(index)), "embedding": floats(vector(text, model: model, dimensions: dimensions))]
        }
        let tokens = texts.reduce(0) { $0 + SimulatedModel.countTokens($1) }
        return (
            .ok,
            [
                "object": "list", "data": .array(data), "model": .string(model),
                "usage": ["prompt_tokens": .int(Int64(tokens)), "total_tokens": .int(Int64(tokens))],
            ]
        )
    }

    /// Gemini's `embedContent` (one `content`) or `batchEmbedContents` (`requests`). Gemini
    /// reports no token usage for embeddings.
    static func geminiResponse(_ body: JSONValue, model: String, batch: Bool) -> (status: HTTPResponse.Status, body: JSONValue) {
        func embed(_ request: JSONValue?) -> JSONValue? {
            guard let parts = request?["content"]?["parts"]?.arrayValue else { return nil }
            let text = parts.compactMap { $0["text"]?.stringValue }.joined()
            let dimensions = (request?["outputDimensionality"] ?? request?["output_dimensionality"])?.intValue
            return ["values": floats(vector(text, model: model, dimensions: dimensions))]
        }
        let invalid: JSONValue = ["error": ["code": 400, "message": "Invalid embedding request (simulated)", "status": "INVALID_ARGUMENT"]]
        if batch {
            guard let requests = body["requests"]?.arrayValue, !requests.isEmpty else { return (.badRequest, invalid) }
            // As Google: "at most 100 requests can be in one batch".
            guard requests.count <= 100 else {
                return (
                    .badRequest,
                    [
                        "error": [
                            "code": 400, "message": "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch",
                            "status": "INVALID_ARGUMENT",
                        ]
                    ]
                )
            }
            let embeddings = requests.map(embed)
            guard embeddings.allSatisfy({ $0 != nil }) else { return (.badRequest, invalid) }
            return (.ok, ["embeddings": .array(embeddings.compactMap { $0 })])
        }
        guard let one = embed(body) else { return (.badRequest, invalid) }
        return (.ok, ["embedding": one])
    }
}
