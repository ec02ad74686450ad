import SignalboxCore

/// The simulated model: a deterministic function from a chat request to a completion.
///
/// The same request always yields the same words and token counts, so tests can assert on
/// what a client receives; different requests yield different answers.
public struct SimulatedModel: Sendable {
    static let vocabulary: [String] = [
        "the", "router", "signal", "box", "routes", "each", "request", "to", "a", "provider", "that", "answers",
        "quickly", "and", "bills", "only", "what", "succeeded", "while", "tokens", "stream", "through", "every",
        "node", "in", "its", "region", "with", "care", "for", "credits", "ledger", "entries", "stay", "exact",
        "so", "nobody", "pays", "twice", "gossip", "spreads", "health", "across", "clusters", "when", "upstreams",
        "fail", "over", "gracefully", "models", "reply", "here", "is", "an", "answer", "from", "simulated",
        "world", "hello", "friend", "today", "again", "soon", "now",
    ]

    public struct Completion: Sendable, Hashable {
        /// Output pieces; each is one completion token.
        public var tokens: [String]
        public var promptTokens: Int
        /// `stop`, or `length` when `max_tokens` cut the answer short.
        public var finishReason: String
        public var text: String { tokens.joined() }
    }

    public init() {}

    /// Completes an OpenAI-style request body.
    public func complete(_ body: JSONValue) -> Completion {
        let messages = body["messages"]?.arrayValue ?? []
        var promptText = ""
        for message in messages {
            promptText += (message["role"]?.stringValue ?? "") + ":"
            switch message["content"] {
            case .string(let text)?: promptText += text
            case .array(let parts)?: for part in parts { promptText += part["text"]?.stringValue ?? "[media]" }
            default: break
            }
            promptText += "\n"
        }
        if let prompt = body["prompt"]?.stringValue { promptText += prompt }
        let model = body["model"]?.stringValue ?? ""
        let seed = SimulatedModel.fnv1a(model + "\u{0}" + promptText)
        let natural = 8 + Int(seed % 24)
        let limit = (body["max_completion_tokens"] ?? body["max_tokens"])?.intValue
        let count = min(natural, limit ?? natural)
        var generator = seed
        var tokens: [String] = []
        for index in 0..<count {
            generator = generator &* 6364136223846793005 &+ 1442695040888963407
            let word = SimulatedModel.vocabulary[Int((generator >> 33) % UInt64(SimulatedModel.vocabulary.count))]
            tokens.append(index == 0 ? word.prefix(1).uppercased() + word.dropFirst() : " " + word)
        }
        if count == natural, !tokens.isEmpty { tokens[tokens.count - 1] += "." }
        return Completion(
            tokens: tokens,
            promptTokens: SimulatedModel.countTokens(promptText) + 3 * messages.count + 3,
            finishReason: count < natural ? "length" : "stop"
        )
    }

    /// A tokenizer stand-in: about one token per four bytes, at least one per word.
    static func countTokens(_ text: String) -> Int {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).count
        return max(words, (text.utf8.count + 3) / 4)
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}
