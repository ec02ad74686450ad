import Foundation
import SignalboxCore

/// The OpenAPI 3.1 description of every route a node serves: the public API, key management, the
/// admin API, the probes and the console's pages. Served at `GET /api/v1/openapi.json` and
/// committed as `Docs/openapi.json` (`signalbox openapi` writes it; a test keeps the two equal and
/// checks that every registered route is described here and nothing else).
public enum APIDocument {
    /// The document, the same on every node whatever its mode.
    public static var document: JSONValue {
        var paths: [String: JSONObject] = [:]
        for operation in operations {
            paths[operation.path, default: [:]][operation.method.lowercased()] = operation.json
        }
        return [
            "openapi": "3.1.0",
            "info": [
                "title": "Signalbox",
                "version": "1",
                "summary": "A self-hosted LLM router: one key, many models and providers, OpenAI-, OpenRouter- and Anthropic-compatible.",
                "description": .string(
                    "Every error of the OpenAI-compatible routes is `{\"error\": {\"code\", \"message\", \"metadata\"}}`; the "
                        + "Anthropic routes answer in Anthropic's error shape. See Docs/api.md and Docs/admin.md."),
                "license": ["name": "Apache-2.0", "identifier": "Apache-2.0"],
            ],
            "servers": [["url": "/"]],
            "tags": .array(Tag.allCases.map { ["name": .string($0.rawValue), "description": .string($0.description)] }),
            "paths": .object(JSONObject(paths.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.object($0.value)) })),
            "components": [
                "securitySchemes": [
                    "apiKey": [
                        "type": "http", "scheme": "bearer",
                        "description": "A Signalbox API key (`sk-sb-v1-…`); admin routes need an operator key of a role that allows them.",
                    ],
                    "anthropicKey": [
                        "type": "apiKey", "in": "header", "name": "x-api-key", "description": "The same key, as Anthropic's SDK sends it.",
                    ],
                    "consoleSession": [
                        "type": "apiKey", "in": "cookie", "name": "sb_session", "description": "A console session (Docs/console.md).",
                    ],
                ],
                "schemas": .object(Schemas.components),
            ],
        ]
    }

    /// The routes the document describes, as `METHOD /path`.
    public static var routes: [String] { operations.map { "\($0.method) \($0.path)" }.sorted() }

    /// The document as `Docs/openapi.json` holds it: indented, keys sorted, one trailing newline.
    public static var text: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // A value type's encoding cannot fail.
        return String(decoding: try! encoder.encode(document), as: UTF8.self) + "\n"
    }

    /// The document's bytes as served (compact).
    static let served = JSONWriter.bytes(document)

    enum Tag: String, CaseIterable {
        case probes, catalog, inference, anthropic, account, keys, admin, cluster, audit, console

        var description: String {
            switch self {
            case .probes: "Load balancer and Prometheus probes."
            case .catalog: "The model and provider catalog (public, as on OpenRouter)."
            case .inference: "Model requests, OpenAI- and OpenRouter-compatible; billed from prepaid credit."
            case .anthropic: "Anthropic's Messages API on the same router."
            case .account: "What a key can see about itself and its account."
            case .keys: "Key management (operator keys)."
            case .admin: "Accounts, credit and the ledger (operator keys; role `billing` or `admin` for changes)."
            case .cluster: "Gossip membership, provider health and regional routing tables."
            case .audit: "The append-only audit trail and the console's role mappings."
            case .console: "The operator console's server-rendered pages and forms (HTML)."
            }
        }
    }
}
