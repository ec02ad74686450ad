import Foundation
import HTTPTypes
import Hummingbird
import Ledger
import SignalboxCore

/// `/api/v1/keys`: key management with an admin key (OpenRouter's management API); changes need the
/// `billing` role, and operator keys (`role`) the `admin` role.
///
/// Keys are addressed by `hash` (the SHA-256 of the secret, as OpenRouter does); a new key's
/// secret is returned once, by the create call. Changes take effect on this node at once and on
/// every other node within a second (the key cache's lifetime).
extension RouterAPI {
    func registerKeyRoutes(_ api: RouterGroup<AuthenticatedRequestContext>) {
        api.get("/keys") { request, context in try await listKeys(request, admin: context.key) }
        api.post("/keys") { request, context in try await createKey(request, context: context) }
        api.get("/keys/:hash") { request, context in
            guard let key = try await dependencies.ledger.key(hash: context.parameters.get("hash") ?? "") else {
                throw APIError.notFound("Key not found")
            }
            return JSONResponse.make(["data": try await keyJSON(key)])
        }
        api.patch("/keys/:hash") { request, context in try await updateKey(request, context: context) }
        api.delete("/keys/:hash") { request, context in
            try await administration.deleteKey(hash: context.parameters.get("hash") ?? "", by: context.actor(node: nodeID))
            return JSONResponse.make(["deleted": true])
        }
    }

    func body(_ request: Request) async throws -> JSONObject {
        let bytes = try await request.body.collect(upTo: 1 << 20)
        guard let object = (try? JSONParser.parse(bytes.readableBytesView))?.objectValue else {
            throw APIError.badRequest("Request body must be a JSON object")
        }
        return object
    }

    static func limit(_ value: JSONValue?) throws(APIError) -> Money?? {
        guard let value else { return nil }
        if value.isNull { return .some(nil) }
        guard let text = value.decimalText, let amount = Money(decimal: text), amount >= .zero, amount <= .maximumAmount else {
            throw Administration.invalid(
                "limit", "'limit' must be a non-negative number of USD up to \(Money.maximumAmount.decimalString), or null")
        }
        return .some(amount)
    }

    static func limitReset(_ value: JSONValue?) throws(APIError) -> String?? {
        guard let value else { return nil }
        if value.isNull { return .some(nil) }
        guard let text = value.stringValue, ["daily", "weekly", "monthly"].contains(text) else {
            throw Administration.invalid("limit_reset", "'limit_reset' must be \"daily\", \"weekly\", \"monthly\" or null")
        }
        return .some(text)
    }

    /// A `region` field: a region name, or null to unpin; nil when absent.
    static func region(_ value: JSONValue?) throws(APIError) -> String?? {
        guard let value else { return nil }
        if value.isNull { return .some(nil) }
        guard let text = value.stringValue, !text.isEmpty,
            text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
        else {
            throw Administration.invalid("region", "'region' must be a region name (letters, digits, '-', '_') or null")
        }
        return .some(text)
    }

    func keyJSON(_ key: KeyRecord) async throws -> JSONValue {
        let usage = try await dependencies.ledger.keyUsage(keyID: key.id, now: Date())
        let formatter = ISO8601DateFormatter()
        let remaining = key.limit.map { max($0 - usage.spent(resetting: key.limitReset), .zero) }
        return [
            "hash": .string(key.hash), "name": .string(key.name), "label": .string(key.label), "disabled": .bool(key.disabled),
            "limit": key.limit.map { .number($0) } ?? nil, "limit_remaining": remaining.map { .number($0) } ?? nil,
            "limit_reset": key.limitReset.map { .string($0) } ?? nil, "include_byok_in_limit": false,
            "usage": .number(usage.total), "usage_daily": .number(usage.daily), "usage_weekly": .number(usage.weekly),
            "usage_monthly": .number(usage.monthly), "byok_usage": 0, "byok_usage_daily": 0, "byok_usage_weekly": 0,
            "byok_usage_monthly": 0, "created_at": .string(formatter.string(from: key.createdAt)), "updated_at": nil,
            "expires_at": key.expiresAt.map { .string(formatter.string(from: $0)) } ?? nil,
            "creator_user_id": .string(key.accountID), "workspace_id": nil,
            "region": key.region.map { .string($0) } ?? nil, "pinned_region": key.pinnedRegion.map { .string($0) } ?? nil,
            "role": key.adminRole.map { .string($0.rawValue) } ?? nil,
        ]
    }

    func listKeys(_ request: Request, admin: KeyRecord) async throws -> Response {
        let account = request.uri.queryParameters.get("account") ?? admin.accountID
        let includeDisabled = request.uri.queryParameters.get("include_disabled") == "true"
        var keys: [JSONValue] = []
        for key in try await dependencies.ledger.keys(account: account) where includeDisabled || !key.disabled {
            keys.append(try await keyJSON(key))
        }
        return JSONResponse.make(["data": .array(keys)])
    }

    func createKey(_ request: Request, context: AuthenticatedRequestContext) async throws -> Response {
        let object = try await body(request)
        guard let name = object["name"]?.stringValue, !name.isEmpty else { throw Administration.invalid("name", "'name' is required") }
        var expiresAt: Date?
        if let text = object["expires_at"]?.stringValue {
            guard let date = ISO8601DateFormatter().date(from: text) else {
                throw Administration.invalid("expires_at", "'expires_at' must be an ISO 8601 time")
            }
            expiresAt = date
        }
        var role: AdminRole?
        if let value = object["role"], !value.isNull {
            guard let text = value.stringValue, let parsed = AdminRole(rawValue: text) else {
                throw Administration.invalid("role", "'role' must be admin, billing or auditor (it makes an operator key), or null")
            }
            role = parsed
        }
        let draft = Administration.KeyDraft(
            account: object["account"]?.stringValue ?? context.key.accountID, name: name,
            limit: try Self.limit(object["limit"]) ?? nil, limitReset: try Self.limitReset(object["limit_reset"]) ?? nil,
            expiresAt: expiresAt, region: try Self.region(object["region"]) ?? nil, adminRole: role)
        let (record, secret) = try await administration.createKey(draft, by: context.actor(node: nodeID))
        return JSONResponse.make(["data": try await keyJSON(record), "key": .string(secret)], status: .created)
    }

    func updateKey(_ request: Request, context: AuthenticatedRequestContext) async throws -> Response {
        let object = try await body(request)
        if let disabled = object["disabled"], disabled.boolValue == nil {
            throw Administration.invalid("disabled", "'disabled' must be a boolean")
        }
        let update = KeyUpdate(
            name: object["name"]?.stringValue, disabled: object["disabled"]?.boolValue, limit: try Self.limit(object["limit"]),
            limitReset: try Self.limitReset(object["limit_reset"]), region: try Self.region(object["region"]))
        let key = try await administration.updateKey(hash: context.parameters.get("hash") ?? "", update, by: context.actor(node: nodeID))
        return JSONResponse.make(["data": try await keyJSON(key)])
    }
}
