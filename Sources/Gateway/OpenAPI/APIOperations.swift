import SignalboxCore

/// One route of the document: its method, path, who may call it, what it takes and answers.
struct APIOperation {
    enum Security {
        /// No key: probes, the catalog, the console's sign-in.
        case none
        /// Any API key (inference, account routes).
        case key
        /// An API key as a bearer token or Anthropic's `x-api-key`.
        case anthropicKey
        /// An operator (admin) key.
        case operatorKey
        /// A console session cookie.
        case console
    }

    var method: String
    var path: String
    var id: String
    var tag: APIDocument.Tag
    var summary: String
    var security: Security = .key
    var parameters: [JSONValue] = []
    var body: JSONValue? = nil
    /// `application/json` unless said otherwise.
    var bodyType = "application/json"
    var responses: [(status: String, description: String, content: JSONObject?)]

    var json: JSONValue {
        var operation: JSONObject = [
            "operationId": .string(id), "tags": [.string(tag.rawValue)], "summary": .string(summary),
        ]
        switch security {
        case .none: operation["security"] = []
        case .key, .operatorKey: operation["security"] = [["apiKey": []]]
        case .anthropicKey: operation["security"] = [["apiKey": []], ["anthropicKey": []]]
        case .console: operation["security"] = [["consoleSession": []]]
        }
        var parameters = self.parameters
        for name in Self.pathParameters(path) {
            parameters.insert(
                ["name": .string(name), "in": "path", "required": true, "schema": ["type": "string", "minLength": 1]], at: 0)
        }
        if !parameters.isEmpty { operation["parameters"] = .array(parameters) }
        if let body {
            operation["requestBody"] = ["required": true, "content": [.init(bodyType): ["schema": body]]]
        }
        var answers: JSONObject = [:]
        for response in responses {
            var answer: JSONObject = ["description": .string(response.description)]
            if let content = response.content { answer["content"] = .object(content) }
            answers[response.status] = .object(answer)
        }
        // Errors every route may give: the shape of its surface.
        let error: JSONValue = tag == .anthropic ? APIDocument.ref("AnthropicError") : APIDocument.ref("Error")
        let errorContent: JSONObject = tag == .console ? ["text/html": [:]] : ["application/json": ["schema": error]]
        if security != .none && security != .console && answers["401"] == nil {
            answers["401"] = ["description": "No key, or a key that is unknown, disabled or expired.", "content": .object(errorContent)]
        }
        if security == .operatorKey && answers["403"] == nil {
            answers["403"] = ["description": "Not an operator key, or its role does not allow this.", "content": .object(errorContent)]
        }
        answers["default"] = ["description": "An error, in the surface's own error shape.", "content": .object(errorContent)]
        operation["responses"] = .object(answers)
        return .object(operation)
    }

    /// `{author}` and `{slug}` of `/api/v1/models/{author}/{slug}/endpoints`.
    static func pathParameters(_ path: String) -> [String] {
        path.split(separator: "/").compactMap { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        }.reversed()
    }
}

extension APIDocument {
    static func ref(_ name: String) -> JSONValue { ["$ref": .string("#/components/schemas/\(name)")] }

    static func json(_ schema: JSONValue) -> JSONObject { ["application/json": ["schema": schema]] }
    static func json(_ name: String) -> JSONObject { json(ref(name)) }

    static func query(_ name: String, _ schema: JSONValue, _ description: String) -> JSONValue {
        ["name": .string(name), "in": "query", "required": false, "schema": schema, "description": .string(description)]
    }

    /// The time range, id cursor, page size and CSV switch of a newest-first list (ledger entries, the audit trail).
    static func pagedByID(defaultLimit: Int) -> [JSONValue] {
        [
            query("since", Schemas.string, "ISO 8601 time."), query("until", Schemas.string, "ISO 8601 time."),
            query("before", ["type": "string", "pattern": "^[0-9]+$"], "The last id of the previous page."),
            query("limit", ["type": "string", "pattern": "^[0-9]+$"], "1 to 1000 (default \(defaultLimit))."),
            query("format", ["type": "string", "enum": ["json", "csv"]], "csv: every matching entry as CSV."),
        ]
    }

    /// A page of `schema` rows with the next page's cursor, or (`format=csv`) the CSV.
    static func pageOrCSV(of schema: String) -> (status: String, description: String, content: JSONObject?) {
        (
            "200", "A page, or the CSV.",
            json(Schemas.object(["data": Schemas.array(ref(schema)), "next_before": Schemas.nullable(Schemas.integer)])).merging(csv)
        )
    }

    static let html: JSONObject = ["text/html": ["schema": ["type": "string"]]]
    static let csv: JSONObject = ["text/csv": ["schema": ["type": "string"]]]
    static let redirect = (status: "303", description: "Redirected (to the page, or to sign-in).", content: JSONObject?.none)

    /// Every route a node serves.
    static var operations: [APIOperation] {
        probes + catalog + inference + account + keys + admin + cluster + audit + console
    }

    static var probes: [APIOperation] {
        [
            APIOperation(
                method: "GET", path: "/healthz", id: "health", tag: .probes, summary: "Liveness: the process answers.", security: .none,
                responses: [("200", "Alive.", json(Schemas.object(["status": Schemas.string])))]),
            APIOperation(
                method: "GET", path: "/readyz", id: "ready", tag: .probes,
                summary:
                    "Readiness: 200 while the node takes traffic (`degraded` when the ledger is out of reach), 503 while starting or draining.",
                security: .none,
                responses: [("200", "Ready or degraded.", json("Readiness")), ("503", "Not ready (`metadata.reason`).", json("Error"))]),
            APIOperation(
                method: "GET", path: "/metrics", id: "metrics", tag: .probes,
                summary: "Prometheus metrics (with `--metrics-require-admin-key`, only for the operator key).", security: .none,
                responses: [("200", "The exposition.", ["text/plain": ["schema": ["type": "string"]]])]),
            APIOperation(
                method: "GET", path: "/api/v1/openapi.json", id: "openapi", tag: .probes, summary: "This document.", security: .none,
                responses: [("200", "The OpenAPI 3.1 document.", json(["type": "object"]))]),
        ]
    }

    static var catalog: [APIOperation] {
        [
            APIOperation(
                method: "GET", path: "/api/v1/models", id: "listModels", tag: .catalog, summary: "The models the router serves.",
                security: .none, responses: [("200", "The models.", json("ModelList"))]),
            APIOperation(
                method: "GET", path: "/api/v1/models/{author}/{slug}/endpoints", id: "listModelEndpoints", tag: .catalog,
                summary: "A model's provider endpoints, with prices and current health.", security: .none,
                responses: [("200", "The endpoints.", json("ModelEndpoints")), ("404", "No such model.", json("Error"))]),
            APIOperation(
                method: "GET", path: "/api/v1/providers", id: "listProviders", tag: .catalog, summary: "The providers and their policies.",
                security: .none, responses: [("200", "The providers.", json("ProviderList"))]),
        ]
    }

    static var inference: [APIOperation] {
        let stream: JSONObject = ["text/event-stream": ["schema": ["type": "string"]]]
        let failures: [(String, String, JSONObject?)] = [
            ("400", "The request is invalid (the message says which field).", json("Error")),
            ("402", "The account's credit does not cover the request's worst case.", json("Error")),
            ("404", "No such model, or no endpoint of it the request may use.", json("Error")),
            ("413", "The body is too large.", json("Error")),
            ("429", "A limit, or every provider rate-limited the request.", json("Error")),
            ("502", "Every provider attempt failed.", json("Error")),
            ("503", "The ledger cannot be reached to prove the account can pay.", json("Error")),
        ]
        return [
            APIOperation(
                method: "POST", path: "/api/v1/chat/completions", id: "createChatCompletion", tag: .inference,
                summary: "A chat completion (OpenAI and OpenRouter format), streamed with `stream: true`.",
                body: ref("ChatCompletionRequest"),
                responses: [("200", "The completion, or its server-sent events.", json("ChatCompletion").merging(stream))]
                    + failures),
            APIOperation(
                method: "POST", path: "/api/v1/completions", id: "createCompletion", tag: .inference,
                summary: "A legacy text completion (`prompt`).", body: ref("CompletionRequest"),
                responses: [("200", "The completion, or its server-sent events.", json("Completion").merging(stream))]
                    + failures),
            APIOperation(
                method: "POST", path: "/api/v1/embeddings", id: "createEmbeddings", tag: .inference,
                summary: "Embeddings for one input or many.", body: ref("EmbeddingsRequest"),
                responses: [("200", "The vectors.", json("Embeddings"))] + failures),
            APIOperation(
                method: "POST", path: "/api/v1/responses", id: "createResponse", tag: .inference,
                summary: "OpenAI's Responses API (stateless: no stored responses).", body: ref("ResponsesRequest"),
                responses: [("200", "The response, or its events.", json("Response").merging(stream))] + failures),
            APIOperation(
                method: "POST", path: "/api/v1/messages", id: "createMessage", tag: .anthropic,
                summary: "Anthropic's Messages API, on any model of the catalog.", security: .anthropicKey,
                body: ref("MessagesRequest"),
                responses: [("200", "The message, or its events.", json("Message").merging(stream))]),
            APIOperation(
                method: "POST", path: "/api/v1/messages/count_tokens", id: "countMessageTokens", tag: .anthropic,
                summary: "An estimate of a Messages request's input tokens.", security: .anthropicKey,
                body: ref("MessagesRequest"),
                responses: [("200", "The count.", json(Schemas.object(["input_tokens": Schemas.integer])))]),
        ]
    }

    static var account: [APIOperation] {
        [
            APIOperation(
                method: "GET", path: "/api/v1/key", id: "currentKey", tag: .account, summary: "The calling key: limits, usage, free tier.",
                responses: [("200", "The key.", json(Schemas.data(ref("CurrentKey"))))]),
            APIOperation(
                method: "GET", path: "/api/v1/auth/key", id: "currentKeyAlias", tag: .account,
                summary: "The calling key (OpenRouter's older path).",
                responses: [("200", "The key.", json(Schemas.data(ref("CurrentKey"))))]),
            APIOperation(
                method: "GET", path: "/api/v1/credits", id: "credits", tag: .account, summary: "The account's credit and usage in USD.",
                responses: [
                    (
                        "200", "Credit and usage.",
                        json(Schemas.data(Schemas.object(["total_credits": Schemas.number, "total_usage": Schemas.number])))
                    )
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/generation", id: "generation", tag: .account,
                summary: "A finished request's record: model, provider, tokens, exact cost, attempts.",
                parameters: [
                    [
                        "name": "id", "in": "query", "required": true, "schema": ["type": "string", "minLength": 1],
                        "description": "The generation id.",
                    ]
                ],
                responses: [
                    ("200", "The record.", json(Schemas.data(ref("Generation")))),
                    ("404", "Not found (or not yet settled).", json("Error")),
                ]),
        ]
    }

    static var keys: [APIOperation] {
        [
            APIOperation(
                method: "GET", path: "/api/v1/keys", id: "listKeys", tag: .keys, summary: "An account's keys.", security: .operatorKey,
                parameters: [
                    query("account", Schemas.string, "The account (default: the operator's)."),
                    query("include_disabled", ["type": "string", "enum": ["true", "false"]], "Include disabled keys."),
                ],
                responses: [("200", "The keys.", json(Schemas.dataArray(ref("Key"))))]),
            APIOperation(
                method: "POST", path: "/api/v1/keys", id: "createKey", tag: .keys,
                summary: "Makes a key; its secret is in the answer, once.",
                security: .operatorKey, body: ref("KeyCreate"),
                responses: [
                    ("201", "The key and its secret.", json(Schemas.object(["data": ref("Key"), "key": Schemas.string]))),
                    ("400", "A field is invalid (`metadata.param`).", json("Error")),
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/keys/{hash}", id: "getKey", tag: .keys, summary: "One key, by its hash.",
                security: .operatorKey,
                responses: [("200", "The key.", json(Schemas.data(ref("Key")))), ("404", "No such key.", json("Error"))]),
            APIOperation(
                method: "PATCH", path: "/api/v1/keys/{hash}", id: "updateKey", tag: .keys,
                summary: "Renames, disables, limits or pins a key.", security: .operatorKey, body: ref("KeyUpdate"),
                responses: [("200", "The key.", json(Schemas.data(ref("Key")))), ("404", "No such key.", json("Error"))]),
            APIOperation(
                method: "DELETE", path: "/api/v1/keys/{hash}", id: "deleteKey", tag: .keys, summary: "Deletes a key.",
                security: .operatorKey,
                responses: [
                    ("200", "Deleted.", json(Schemas.object(["deleted": Schemas.boolean]))), ("404", "No such key.", json("Error")),
                ]),
        ]
    }

    static var admin: [APIOperation] {
        let money = Schemas.decimal
        return [
            APIOperation(
                method: "GET", path: "/api/v1/admin/accounts", id: "listAccounts", tag: .admin,
                summary: "Accounts with balance, held and available credit, 50 a page.", security: .operatorKey,
                parameters: [
                    query("search", Schemas.string, "Part of an account's id or name."),
                    query("after", Schemas.string, "The last account id of the previous page."),
                    query("limit", ["type": "string", "pattern": "^[0-9]+$"], "1 to 1000 (default 50)."),
                ],
                responses: [
                    (
                        "200", "A page.",
                        json(Schemas.object(["data": Schemas.array(ref("AccountRow")), "next_after": Schemas.nullable(Schemas.string)]))
                    )
                ]),
            APIOperation(
                method: "POST", path: "/api/v1/admin/accounts", id: "createAccount", tag: .admin, summary: "Makes a customer account.",
                security: .operatorKey,
                body: Schemas.object(
                    [
                        "name": ["type": "string", "minLength": 1, "maxLength": 200],
                        "id": ["type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"], "region": Schemas.region,
                    ], required: ["name"]),
                responses: [
                    (
                        "201", "The account.",
                        json(Schemas.object(["id": Schemas.string, "name": Schemas.string, "region": Schemas.nullable(Schemas.string)]))
                    ),
                    ("409", "An account with this id exists.", json("Error")),
                ]),
            APIOperation(
                method: "PATCH", path: "/api/v1/admin/accounts/{account}", id: "pinAccount", tag: .admin,
                summary: "Pins an account to a region, or unpins it (`null`).", security: .operatorKey,
                body: Schemas.object(["region": Schemas.region], required: ["region"]),
                responses: [
                    (
                        "200", "The account's pin.",
                        json(Schemas.object(["id": Schemas.string, "region": Schemas.nullable(Schemas.string)]))
                    ),
                    ("404", "No such account.", json("Error")),
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/accounts/{account}/balance", id: "accountBalance", tag: .admin,
                summary: "An account's balance and available credit.", security: .operatorKey,
                responses: [
                    ("200", "The balance.", json(Schemas.object(["account": Schemas.string, "balance": money, "available": money]))),
                    ("404", "No such account.", json("Error")),
                ]),
            APIOperation(
                method: "POST", path: "/api/v1/admin/credits", id: "addCredits", tag: .admin,
                summary: "Records a credit purchase (5.5% fee, $0.80 minimum) or a grant; idempotent by `reference`.",
                security: .operatorKey,
                body: Schemas.object(
                    [
                        "account": Schemas.string, "amount": Schemas.amount,
                        "kind": ["type": "string", "enum": ["purchase", "grant"]], "reference": Schemas.string,
                    ], required: ["account", "amount"]),
                responses: [("200", "Recorded (or, with `already_recorded`, found under this reference).", json("CreditResult"))]),
            APIOperation(
                method: "POST", path: "/api/v1/admin/ledger/entries/{id}/reversal", id: "reverseEntry", tag: .admin,
                summary: "Reverses a ledger entry with a new, opposite one (entries are never changed).", security: .operatorKey,
                body: Schemas.object(["reason": ["type": "string", "minLength": 1]], required: ["reason"]),
                responses: [
                    (
                        "200", "The reversing entry (`already_recorded` when it existed).",
                        json(
                            Schemas.object([
                                "reversed": Schemas.integer, "debit": Schemas.string, "credit": Schemas.string, "amount": money,
                                "memo": Schemas.nullable(Schemas.string), "already_recorded": Schemas.boolean,
                            ]))
                    ),
                    ("404", "No such entry.", json("Error")),
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/ledger/entries", id: "listLedgerEntries", tag: .admin,
                summary: "Ledger entries, newest first, 50 a page (`format=csv` streams them all).", security: .operatorKey,
                parameters: [
                    query("account", Schemas.string, "Entries debiting or crediting this account."),
                    query("key", Schemas.string, "Entries of this key id."), query("model", Schemas.string, "Charges for this model."),
                    query("provider", Schemas.string, "Entries of this provider."),
                    query("kind", Schemas.string, "purchase, fee, grant, charge, insurance, overage, reversal, …"),
                    query("generation", Schemas.string, "Entries of this generation."),
                ] + pagedByID(defaultLimit: 50),
                responses: [pageOrCSV(of: "LedgerEntry")]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/ledger/spend", id: "spend", tag: .admin,
                summary: "Spend grouped by day, hour, model, provider, key or account.", security: .operatorKey,
                parameters: [
                    query("by", ["type": "string", "enum": ["day", "hour", "model", "provider", "key", "account"]], "The grouping."),
                    query("account", Schemas.string, "One account's spend."), query("since", Schemas.string, "ISO 8601 time."),
                    query("until", Schemas.string, "ISO 8601 time."),
                    query("format", ["type": "string", "enum": ["json", "csv"]], "csv: the groups as CSV."),
                ],
                responses: [
                    (
                        "200", "The groups.",
                        json(
                            Schemas.object([
                                "by": Schemas.string,
                                "data": Schemas.array(
                                    Schemas.object(["group": Schemas.string, "amount": money, "requests": Schemas.integer])),
                            ])
                        ).merging(csv)
                    )
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/ledger/verify", id: "verifyLedger", tag: .admin,
                summary: "Checks the ledger's invariants (what `signalbox ledger verify` prints).", security: .operatorKey,
                responses: [("200", "The verdict.", json("Verification"))]),
        ]
    }

    static var cluster: [APIOperation] {
        let table = Schemas.object([
            "region": Schemas.string, "allowed": Schemas.array(Schemas.string), "preferred": Schemas.array(Schemas.string),
            "set": Schemas.boolean,
        ])
        return [
            APIOperation(
                method: "GET", path: "/api/v1/admin/cluster/members", id: "clusterMembers", tag: .cluster,
                summary: "The members this node knows, with state and incarnation.", security: .operatorKey,
                responses: [("200", "The members.", json(Schemas.dataArray(ref("Member"))))]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/cluster/health", id: "clusterHealth", tag: .cluster,
                summary: "Each node's provider-endpoint health report, and what is routed around.", security: .operatorKey,
                responses: [
                    (
                        "200", "The reports.",
                        json(
                            Schemas.data(
                                Schemas.object(["nodes": ["type": "object"], "routed_around": Schemas.array(Schemas.string)])))
                    )
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/cluster/state", id: "clusterState", tag: .cluster,
                summary: "This node's gossip state: incarnation, awareness, queues, counters.", security: .operatorKey,
                responses: [("200", "The state.", json(["type": "object"])), ("409", "This node is not in a cluster.", json("Error"))]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/cluster/keyring", id: "clusterKeyring", tag: .cluster,
                summary: "The cluster keys' fingerprints (never the keys).", security: .operatorKey,
                responses: [
                    ("200", "The fingerprints.", json(["type": "object"])), ("409", "This node is not in a cluster.", json("Error")),
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/routing/{region}", id: "getRoutingTable", tag: .cluster,
                summary: "A region's routing table (allowed and preferred providers).", security: .operatorKey,
                responses: [("200", "The table.", json(table))]),
            APIOperation(
                method: "PUT", path: "/api/v1/admin/routing/{region}", id: "putRoutingTable", tag: .cluster,
                summary: "Sets a region's routing table; gossip spreads it to every node.", security: .operatorKey,
                body: Schemas.object(
                    ["allowed": Schemas.array(Schemas.string), "preferred": Schemas.array(Schemas.string)], required: []),
                responses: [("200", "The table now.", json(table)), ("409", "This node is not in a cluster.", json("Error"))]),
        ]
    }

    static var audit: [APIOperation] {
        [
            APIOperation(
                method: "GET", path: "/api/v1/admin/audit", id: "listAudit", tag: .audit,
                summary: "The audit trail, newest first.", security: .operatorKey,
                parameters: [
                    query("actor", Schemas.string, "Who made the change."), query("action", Schemas.string, "e.g. key.create."),
                    query("target", Schemas.string, "What was changed."),
                ] + pagedByID(defaultLimit: 100),
                responses: [pageOrCSV(of: "AuditEntry")]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/alerts", id: "listAlertDeliveries", tag: .audit,
                summary: "This node's latest alert deliveries (500 at most), newest first.", security: .operatorKey,
                responses: [
                    (
                        "200", "The deliveries.",
                        json(Schemas.object(["configured": Schemas.boolean, "data": Schemas.array(ref("AlertDelivery"))]))
                    )
                ]),
            APIOperation(
                method: "GET", path: "/api/v1/admin/roles", id: "listRoleMappings", tag: .audit,
                summary: "Single sign-on role mappings (group or email domain to role).", security: .operatorKey,
                responses: [("200", "The mappings.", json(Schemas.dataArray(ref("RoleMapping"))))]),
            APIOperation(
                method: "PUT", path: "/api/v1/admin/roles", id: "putRoleMappings", tag: .audit,
                summary: "Sets (or, with `role: null`, removes) one role mapping.", security: .operatorKey,
                body: Schemas.object(
                    [
                        "claim": ["type": "string", "enum": ["group", "email_domain"]], "value": ["type": "string", "minLength": 1],
                        "role": ["type": ["string", "null"], "enum": ["admin", "billing", "auditor", .null]],
                    ], required: ["claim", "value", "role"]),
                responses: [("200", "The mappings now.", json(Schemas.dataArray(ref("RoleMapping"))))]),
        ]
    }

    /// The console's pages: HTML for a signed-in session, a redirect to sign-in otherwise. Forms
    /// post `application/x-www-form-urlencoded` with the session's CSRF token.
    static var console: [APIOperation] {
        let pages: [(String, String, String)] = [
            ("/console", "consoleOverview", "Overview: requests, spend, errors, failovers."),
            ("/console/accounts", "consoleAccounts", "Accounts."), ("/console/accounts/{account}", "consoleAccount", "One account."),
            ("/console/keys", "consoleKeys", "Keys."), ("/console/ledger", "consoleLedger", "The ledger."),
            ("/console/generations/{generation}", "consoleGeneration", "One generation."), ("/console/spend", "consoleSpend", "Spend."),
            ("/console/cluster", "consoleCluster", "Members, health, routing tables."),
            ("/console/audit", "consoleAudit", "The audit trail."),
            ("/console/access", "consoleAccess", "Role mappings."),
        ]
        let exports: [(String, String, String)] = [
            ("/console/ledger/export.csv", "consoleLedgerExport", "The ledger page's entries as CSV."),
            ("/console/audit/export.csv", "consoleAuditExport", "The audit page's entries as CSV."),
        ]
        let forms: [(String, String, String)] = [
            ("/console/accounts", "consoleCreateAccount", "Makes an account."),
            ("/console/accounts/{account}/grant", "consoleGrant", "Grants credit."),
            ("/console/accounts/{account}/purchase", "consolePurchase", "Records a purchase (after a confirmation page)."),
            ("/console/accounts/{account}/region", "consolePin", "Pins an account to a region."),
            ("/console/keys", "consoleCreateKey", "Makes a key (its secret shown once)."),
            ("/console/keys/{hash}", "consoleUpdateKey", "Changes a key's limit, window or region."),
            ("/console/keys/{hash}/revoke", "consoleRevokeKey", "Revokes a key."),
            ("/console/ledger/{entry}/reverse", "consoleReverse", "Reverses a ledger entry."),
            ("/console/routing/{region}", "consoleRouting", "Sets a region's routing table."),
            ("/console/access/roles", "consoleRoles", "Replaces the role mappings."),
            ("/console/logout", "consoleLogout", "Signs out."),
        ]
        let form: JSONValue = ["type": "object", "additionalProperties": ["type": "string"]]
        var operations = pages.map { path, id, summary in
            APIOperation(
                method: "GET", path: path, id: id, tag: .console, summary: summary, security: .console,
                responses: [("200", "The page.", html), redirect])
        }
        operations += exports.map { path, id, summary in
            APIOperation(
                method: "GET", path: path, id: id, tag: .console, summary: summary, security: .console,
                responses: [("200", "The CSV.", csv), redirect])
        }
        operations += forms.map { path, id, summary in
            APIOperation(
                method: "POST", path: path, id: id, tag: .console, summary: summary, security: .console, body: form,
                bodyType: "application/x-www-form-urlencoded",
                responses: [("200", "A page (a confirmation, or the form with its errors).", html), redirect])
        }
        operations += [
            APIOperation(
                method: "GET", path: "/console/login", id: "consoleSignInPage", tag: .console, summary: "The sign-in page.",
                security: .none, responses: [("200", "The page.", html), redirect]),
            APIOperation(
                method: "POST", path: "/console/login", id: "consoleSignIn", tag: .console, summary: "Signs in with an admin key.",
                security: .none, body: form, bodyType: "application/x-www-form-urlencoded",
                responses: [("200", "The sign-in page with its error.", html), redirect]),
            APIOperation(
                method: "GET", path: "/console/login/oidc", id: "consoleSingleSignOn", tag: .console,
                summary: "Starts single sign-on (a redirect to the identity provider).", security: .none,
                responses: [("302", "To the identity provider.", nil), redirect]),
            APIOperation(
                method: "GET", path: "/console/oidc/callback", id: "consoleSingleSignOnReturn", tag: .console,
                summary: "The identity provider's redirect back.", security: .none,
                parameters: [
                    query("code", Schemas.string, "The authorization code."), query("state", Schemas.string, "The sign-in's state."),
                ],
                responses: [redirect, ("200", "The sign-in page with its error.", html)]),
        ]
        for (asset, type) in [("console.css", "text/css"), ("console.js", "text/javascript"), ("favicon.svg", "image/svg+xml")] {
            operations.append(
                APIOperation(
                    method: "GET", path: "/console/assets/\(asset)", id: "consoleAsset-\(asset)", tag: .console,
                    summary: "A static asset of the console.", security: .none,
                    responses: [("200", "The asset.", [.init(type): ["schema": ["type": "string"]]])]))
        }
        return operations
    }
}
