import SignalboxCore

/// The document's schemas. Objects list the fields clients rely on; answers may carry more
/// (OpenAI and OpenRouter add fields over time, and so may we), so none closes its properties.
enum Schemas {
    static let string: JSONValue = ["type": "string"]
    static let integer: JSONValue = ["type": "integer"]
    static let number: JSONValue = ["type": "number"]
    static let boolean: JSONValue = ["type": "boolean"]
    /// Money in the admin API: an exact decimal string of USD (never a float).
    static let decimal: JSONValue = ["type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"]
    static let anything: JSONValue = [:]
    /// A region name as a request gives it, or null to unpin.
    static let region: JSONValue = nullable(["type": "string", "pattern": "^[A-Za-z0-9_-]+$"])
    /// A positive amount of USD as the admin API takes it: a decimal string or a JSON number.
    static let amount: JSONValue = [
        "anyOf": [
            ["type": "string", "pattern": "^[0-9]{1,6}(\\.[0-9]{1,6})?$"], ["type": "number", "exclusiveMinimum": 0, "maximum": 100_000],
        ]
    ]

    static func nullable(_ schema: JSONValue) -> JSONValue { ["anyOf": [schema, ["type": "null"]]] }
    static func array(_ items: JSONValue) -> JSONValue { ["type": "array", "items": items] }

    /// An object with these properties, all required unless `required` names fewer.
    static func object(_ properties: JSONObject, required: [String]? = nil) -> JSONValue {
        let names = required ?? properties.map(\.key)
        var schema: JSONObject = ["type": "object", "properties": .object(properties)]
        if !names.isEmpty { schema["required"] = .array(names.map { .string($0) }) }
        return .object(schema)
    }

    static func data(_ schema: JSONValue) -> JSONValue { object(["data": schema]) }
    static func dataArray(_ items: JSONValue) -> JSONValue { object(["data": array(items)]) }

    static var components: JSONObject {
        let message = object(
            [
                "role": ["type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]],
                "content": nullable(["type": ["string", "array"]]), "name": string, "tool_call_id": string,
            ], required: ["role"])
        let model: JSONValue = ["type": "string", "minLength": 1, "examples": ["openai/gpt-4o-mini"]]
        let usage = object(["prompt_tokens": integer, "completion_tokens": integer, "total_tokens": integer])
        let provider = object(
            [
                "order": array(string), "only": array(string), "ignore": array(string), "allow_fallbacks": boolean,
                "data_collection": ["type": "string", "enum": ["allow", "deny"]], "sort": string,
            ], required: [])
        let routing: JSONObject = [
            "models": array(string), "provider": provider, "stream": boolean, "max_tokens": ["type": "integer", "minimum": 1],
            "temperature": number, "top_p": number, "stop": ["type": ["string", "array"]], "user": string,
        ]
        return [
            "Error": object(
                [
                    "error": object(
                        [
                            "code": integer, "message": string,
                            "metadata": [
                                "type": "object",
                                "description": "`error_type`, and where it applies `param`, `provider_name`, `raw`, `reason`, `region`…",
                            ],
                        ], required: ["code", "message"])
                ]),
            "AnthropicError": object(
                ["type": ["const": "error"], "error": object(["type": string, "message": string])]),
            "Readiness": object(
                [
                    "status": ["type": "string", "enum": ["ready", "degraded"]],
                    "ledger": ["type": "string", "enum": ["ok", "replaying", "unreachable"]], "spooled_settlements": integer,
                    "gossip": ["type": "string", "enum": ["ok", "down"]],
                ], required: ["status", "ledger", "spooled_settlements"]),
            "Model": object(
                [
                    "id": string, "canonical_slug": string, "name": string, "created": integer, "description": string,
                    "context_length": integer, "architecture": ["type": "object"],
                    "pricing": object(["prompt": decimal, "completion": decimal], required: ["prompt", "completion"]),
                    "top_provider": ["type": "object"], "supported_parameters": array(string),
                ], required: ["id", "name", "created", "context_length", "pricing"]),
            "ModelList": dataArray(APIDocument.ref("Model")),
            "ModelEndpoints": data(
                object(
                    [
                        "id": string, "name": string,
                        "endpoints": array(
                            object(
                                [
                                    "name": string, "provider_name": string, "tag": string, "context_length": integer,
                                    "pricing": ["type": "object"], "status": integer, "uptime_last_30m": nullable(number),
                                ], required: ["name", "provider_name", "tag", "context_length", "pricing"])),
                    ], required: ["id", "endpoints"])),
            "ProviderList": dataArray(object(["name": string, "slug": string], required: ["name", "slug"])),
            "ChatCompletionRequest": object(
                routing.merging(
                    [
                        "model": model, "messages": ["type": "array", "minItems": 1, "items": message],
                        "tools": array(["type": "object"]), "tool_choice": anything, "response_format": ["type": "object"],
                        "max_completion_tokens": ["type": "integer", "minimum": 1], "n": ["type": "integer", "minimum": 1],
                        "reasoning": ["type": "object"], "stream_options": ["type": "object"],
                    ]), required: ["messages"]),
            "ChatCompletion": object(
                [
                    "id": string, "object": ["const": "chat.completion"], "created": integer, "model": string, "provider": string,
                    "choices": array(
                        object(
                            [
                                "index": integer, "message": message, "finish_reason": nullable(string),
                                "native_finish_reason": nullable(string),
                            ], required: ["index", "message", "finish_reason"])),
                    "usage": usage,
                ], required: ["id", "object", "created", "model", "choices"]),
            "CompletionRequest": object(
                routing.merging(["model": model, "prompt": ["type": ["string", "array"]]]),
                required: ["prompt"]),
            "Completion": object(
                [
                    "id": string, "object": ["const": "text_completion"], "created": integer, "model": string,
                    "choices": array(object(["index": integer, "text": string, "finish_reason": nullable(string)])),
                    "usage": usage,
                ], required: ["id", "object", "model", "choices"]),
            "EmbeddingsRequest": object(
                [
                    "model": model, "input": ["type": ["string", "array"]],
                    "dimensions": ["type": "integer", "minimum": 1], "encoding_format": ["type": "string", "enum": ["float", "base64"]],
                    "provider": provider, "user": string,
                ], required: ["model", "input"]),
            "Embeddings": object(
                [
                    "object": ["const": "list"], "model": string,
                    "data": array(
                        object(["object": ["const": "embedding"], "index": integer, "embedding": ["type": ["array", "string"]]])),
                    "usage": object(["prompt_tokens": integer, "total_tokens": integer]),
                ], required: ["object", "model", "data"]),
            "ResponsesRequest": object(
                routing.merging(
                    [
                        "model": model, "input": ["type": ["string", "array"]], "instructions": string,
                        "max_output_tokens": ["type": "integer", "minimum": 1], "tools": array(["type": "object"]),
                    ]), required: ["input"]),
            "Response": object(
                [
                    "id": string, "object": ["const": "response"], "created_at": integer, "model": string, "status": string,
                    "output": array(["type": "object"]), "usage": ["type": "object"],
                ], required: ["id", "object", "model", "status", "output"]),
            "MessagesRequest": object(
                [
                    "model": model, "max_tokens": ["type": "integer", "minimum": 1],
                    "messages": ["type": "array", "minItems": 1, "items": object(["role": string, "content": anything])],
                    "system": ["type": ["string", "array"]], "stream": boolean, "temperature": number, "tools": array(["type": "object"]),
                    "stop_sequences": array(string),
                ], required: ["model", "messages"]),
            "Message": object(
                [
                    "id": string, "type": ["const": "message"], "role": ["const": "assistant"], "model": string,
                    "content": array(["type": "object"]), "stop_reason": nullable(string),
                    "usage": object(["input_tokens": integer, "output_tokens": integer]),
                ], required: ["id", "type", "role", "model", "content"]),
            "CurrentKey": object(
                [
                    "label": string, "name": string, "limit": nullable(number), "limit_remaining": nullable(number), "usage": number,
                    "is_free_tier": boolean,
                ], required: ["label", "limit", "usage", "is_free_tier"]),
            "Generation": object(
                [
                    "id": string, "model": string, "provider_name": nullable(string), "total_cost": number,
                    "tokens_prompt": integer, "tokens_completion": integer, "streamed": boolean, "cancelled": boolean,
                    "finish_reason": nullable(string), "latency": nullable(integer), "created_at": string,
                ], required: ["id", "model", "total_cost", "tokens_prompt", "tokens_completion"]),
            "Key": object(
                [
                    "hash": string, "name": string, "label": string, "disabled": boolean, "limit": nullable(number),
                    "limit_remaining": nullable(number), "limit_reset": nullable(string), "usage": number, "created_at": string,
                    "expires_at": nullable(string), "creator_user_id": string, "region": nullable(string),
                    "pinned_region": nullable(string), "role": nullable(["type": "string", "enum": ["admin", "billing", "auditor"]]),
                ], required: ["hash", "name", "label", "disabled", "limit", "usage", "created_at"]),
            "KeyCreate": object(
                [
                    "name": ["type": "string", "minLength": 1], "account": string, "limit": nullable(["type": "number", "minimum": 0]),
                    "limit_reset": nullable(["type": "string", "enum": ["daily", "weekly", "monthly"]]),
                    "expires_at": ["type": "string", "format": "date-time"], "region": region,
                    "role": nullable(["type": "string", "enum": ["admin", "billing", "auditor"]]),
                ], required: ["name"]),
            "KeyUpdate": object(
                [
                    "name": ["type": "string", "minLength": 1], "disabled": boolean, "limit": nullable(["type": "number", "minimum": 0]),
                    "limit_reset": nullable(["type": "string", "enum": ["daily", "weekly", "monthly"]]), "region": region,
                ], required: []),
            "AccountRow": object([
                "id": string, "name": string, "region": nullable(string), "balance": decimal, "held": decimal, "available": decimal,
                "open_leases": integer, "created_at": string,
            ]),
            "CreditResult": object([
                "account": string, "credit": decimal, "fee": decimal, "charged": decimal, "reference": string, "balance": decimal,
                "already_recorded": boolean,
            ]),
            "LedgerEntry": object(
                [
                    "id": integer, "created_at": string, "kind": string, "debit": string, "credit": string, "amount": decimal,
                    "memo": nullable(string), "key_id": nullable(string), "generation_id": nullable(string),
                ], required: ["id", "created_at", "kind", "debit", "credit", "amount"]),
            "Verification": object(
                [
                    "consistent": boolean, "transfers": integer, "mismatched_accounts": array(anything), "sum_of_balances": decimal,
                    "invariants": array(object(["name": string, "holds": boolean, "violations": integer, "examples": array(anything)])),
                    "summary": ["type": "object"],
                ], required: ["consistent", "transfers", "invariants"]),
            "Member": object(
                [
                    "id": string, "region": string, "address": nullable(string), "state": string, "incarnation": integer,
                    "self": boolean,
                ], required: ["id", "region", "state", "incarnation"]),
            "AuditEntry": object(
                [
                    "id": integer, "created_at": string, "actor": string, "role": nullable(string), "action": string, "target": string,
                    "before": anything, "after": anything, "node": string, "source_address": nullable(string),
                ], required: ["id", "created_at", "actor", "action", "target", "node"]),
            "AlertDelivery": object(
                [
                    "id": string, "event_id": string, "type": string, "destination": string,
                    "status": ["type": "string", "enum": ["pending", "retrying", "delivered", "failed", "dropped"]],
                    "attempts": integer, "last_response": nullable(integer), "last_error": nullable(string), "created_at": string,
                    "updated_at": string,
                ], required: ["id", "event_id", "type", "destination", "status", "attempts", "created_at"]),
            "RoleMapping": object([
                "claim": ["type": "string", "enum": ["group", "email_domain"]], "value": string,
                "role": ["type": "string", "enum": ["admin", "billing", "auditor"]],
            ]),
        ]
    }
}

extension JSONObject {
    /// These fields with `other`'s added (and replacing).
    func merging(_ other: JSONObject) -> JSONObject {
        var merged = self
        for (key, value) in other { merged[key] = value }
        return merged
    }
}
