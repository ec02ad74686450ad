import Foundation

/// What may leave the node of an upstream's error text. Providers put organisation ids and
/// partial keys in their errors; a misbehaving upstream may echo the request (the operator's
/// `Authorization` header), internal hosts and tracebacks. Clients and `/generation` get the text
/// `forClients` (all of those replaced); the node's debug log gets it `forOperators` (keys only).
public enum ErrorTextRedaction {
    /// The longest error text a client is shown.
    public static let clientLimit = 1000

    private struct Rule: @unchecked Sendable {
        let pattern: NSRegularExpression
        let replacement: String

        init(_ pattern: String, _ replacement: String) {
            self.pattern = try! NSRegularExpression(pattern: pattern, options: [.caseInsensitive])
            self.replacement = replacement
        }
    }

    /// Credentials: header and field values, bearer tokens, provider key shapes (partial keys
    /// with `****` included).
    private static let secretRules = [
        // A credential-named field or header, in any quoting (JSON-escaped too), any scheme word.
        Rule(
            #"((?:authorization|proxy-authorization|x-api-key|x-goog-api-key|api[-_]?key|(?:access|refresh|id|auth|session)?[-_]?token|client[-_]?secret|secret|password|passwd|cookie|set-cookie)\\?["']?\s*[:=]\s*\\?["']?)(?:(?:bearer|basic|token|digest)\s+)?[^\s"'\\,;}]+"#,
            "$1[redacted]"),
        Rule(#"\b(bearer|basic|token|digest)\s+[A-Za-z0-9._~+/=*-]{6,}"#, "$1 [redacted]"),
        Rule(#"\b(?:sk|pk|rk|gsk|xai|sess|key|ak|tok|hf|fw|tgp|pplx|r8|csk|nvapi|api)[-_][A-Za-z0-9*_-]{6,}"#, "[redacted key]"),
        Rule(#"\bAIza[0-9A-Za-z_-]{20,}"#, "[redacted key]"),
        Rule(#"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"#, "[redacted token]"),
        // Keys with no telling prefix (Azure, Mistral, Cohere, DeepInfra): a long run of letters
        // and digits holding both, or 32+ hex digits.
        Rule(#"\b(?=[A-Za-z0-9]{32,}\b)(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b"#, "[redacted key]"),
    ]

    /// Where things are: organisation and project ids, URLs, host:port, IP addresses, file paths.
    private static let placeRules = [
        Rule(#"\b(?:org|proj|project|user|acct)[-_](?=[A-Za-z0-9]*\d)[A-Za-z0-9]{6,}\b"#, "[redacted id]"),
        Rule(#"(organi[sz]ation(?:\s+id)?\s*[:=]?\s*["']?)[A-Za-z0-9_-]{6,}"#, "$1[redacted id]"),
        Rule(#"\b[a-z][a-z0-9+.-]*://[^\s"'<>)\]]+"#, "[redacted url]"),
        Rule(#"\b[A-Za-z][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){0,8}:\d{2,5}\b"#, "[redacted host]"),
        Rule(#"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"#, "[redacted address]"),
        Rule(#"\[[0-9a-f:]*:[0-9a-f:]+\](?::\d{1,5})?"#, "[redacted address]"),
        Rule(#"(?:~|\.{1,2})?(?:/[A-Za-z0-9._@+-]+){2,}/?"#, "[redacted path]"),
        Rule(#"\b[A-Z]:\\[^\s"']+"#, "[redacted path]"),
    ]

    /// Text longer than this is cut before the rules run: error bodies may be large, and no
    /// client is shown more than `clientLimit` characters anyway.
    static let scanLimit = 8192

    /// `text` with credentials and places replaced, cut to `clientLimit` characters.
    public static func forClients(_ text: String) -> String {
        let redacted = apply(placeRules, to: apply(secretRules, to: String(text.prefix(scanLimit))))
        return redacted.count > clientLimit ? String(redacted.prefix(clientLimit)) + "…" : redacted
    }

    /// `text` with credentials replaced: for the operator's own logs.
    public static func forOperators(_ text: String) -> String { apply(secretRules, to: String(text.prefix(4 * scanLimit))) }

    private static func apply(_ rules: [Rule], to text: String) -> String {
        var result = text
        for rule in rules {
            result = rule.pattern.stringByReplacingMatches(
                in: result, range: NSRange(result.startIndex..., in: result), withTemplate: rule.replacement)
        }
        return result
    }
}
