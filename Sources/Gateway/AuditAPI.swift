import Alerts
import Foundation
import Hummingbird
import Ledger
import NIOCore
import SignalboxCore

/// `/api/v1/admin/audit` (the audit trail, newest first, paged by `before`) and
/// `/api/v1/admin/roles` (single-sign-on role mappings).
extension RouterAPI {
    func registerAuditRoutes(_ api: RouterGroup<AuthenticatedRequestContext>) {
        api.get("/admin/audit") { request, _ in
            let parameters = request.uri.queryParameters
            let query = try Self.auditQuery(parameters)
            let entries = try await dependencies.ledger.auditEntries(query)
            if parameters["format"] == "csv" {
                return Response(
                    status: .ok,
                    headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"audit.csv\""],
                    body: .init(byteBuffer: ByteBuffer(string: AuditFormat.csv(entries))))
            }
            let next: JSONValue = entries.count == query.limit ? entries.last.map { .int($0.id) } ?? nil : nil
            return JSONResponse.make(["data": .array(entries.map(AuditFormat.json)), "next_before": next])
        }
        api.get("/admin/roles") { _, _ in
            let mappings = try await dependencies.ledger.roleMappings()
            return JSONResponse.make(["data": .array(mappings.map(AuditFormat.json))])
        }
        api.get("/admin/alerts") { _, _ in
            let records = dependencies.alerts?.deliveries ?? []
            return JSONResponse.make([
                "configured": .bool(dependencies.alerts != nil), "data": .array(records.map(\.json)),
            ])
        }
        api.put("/admin/roles") { request, context in
            let body = try await body(request)
            guard let claim = body["claim"]?.stringValue.flatMap(RoleMapping.Claim.init(rawValue:)) else {
                throw Administration.invalid("claim", "'claim' must be group or email_domain")
            }
            var role: AdminRole?
            if let value = body["role"], !value.isNull {
                guard let parsed = value.stringValue.flatMap(AdminRole.init(rawValue:)) else {
                    throw Administration.invalid("role", "'role' must be admin, billing, auditor, or null to remove the rule")
                }
                role = parsed
            }
            try await administration.setRoleMapping(
                claim, value: body["value"]?.stringValue ?? "", role: role, by: context.actor(node: nodeID))
            let mappings = try await dependencies.ledger.roleMappings()
            return JSONResponse.make(["data": .array(mappings.map(AuditFormat.json))])
        }
    }

    public static func auditQuery(_ parameters: Parameters) throws -> AuditQuery {
        func time(_ name: String) throws -> Date? {
            guard let text = parameters[Substring(name)] else { return nil }
            guard let date = EntryQuery.parseTime(String(text)) else {
                throw Administration.invalid(name, "'\(name)' must be a date (2026-11-25) or an ISO 8601 time")
            }
            return date
        }
        var action: AuditAction?
        if let text = parameters["action"] {
            guard let parsed = AuditAction(rawValue: String(text)) else {
                throw Administration.invalid(
                    "action", "Unknown action \(text); one of \(AuditAction.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            action = parsed
        }
        var before: Int64?
        if let text = parameters["before"] {
            guard let parsed = Int64(text), parsed > 0 else {
                throw Administration.invalid("before", "'before' must be an entry id (a page's next_before)")
            }
            before = parsed
        }
        return AuditQuery(
            since: try time("since"), until: try time("until"), actor: parameters["actor"].map(String.init), action: action,
            target: parameters["target"].map(String.init), limit: try pageLimit(parameters["limit"], default: 100), before: before)
    }
}

/// The audit trail as JSON, CSV and text: the API, the console's export and `signalbox audit list`.
public enum AuditFormat {
    public static let columns = ["id", "created_at", "actor", "role", "action", "target", "before", "after", "node", "source_address"]

    public static func fields(_ entry: AuditEntry) -> [String] {
        [
            String(entry.id), ISO8601DateFormatter().string(from: entry.createdAt), entry.actor, entry.role?.rawValue ?? "",
            entry.action.rawValue, entry.target, entry.before.map(JSONWriter.string) ?? "", entry.after.map(JSONWriter.string) ?? "",
            entry.node, entry.sourceAddress ?? "",
        ]
    }

    public static func json(_ entry: AuditEntry) -> JSONValue {
        [
            "id": .int(entry.id), "created_at": .string(ISO8601DateFormatter().string(from: entry.createdAt)),
            "actor": .string(entry.actor), "role": entry.role.map { .string($0.rawValue) } ?? nil,
            "action": .string(entry.action.rawValue), "target": .string(entry.target), "before": entry.before ?? nil,
            "after": entry.after ?? nil, "node": .string(entry.node), "source_address": entry.sourceAddress.map { .string($0) } ?? nil,
        ]
    }

    public static func json(_ mapping: RoleMapping) -> JSONValue {
        ["claim": .string(mapping.claim.rawValue), "value": .string(mapping.value), "role": .string(mapping.role.rawValue)]
    }

    public static func csv(_ entries: [AuditEntry]) -> String {
        columns.joined(separator: ",") + "\r\n"
            + entries.map { fields($0).map(EntryFormat.csvField).joined(separator: ",") + "\r\n" }.joined()
    }

    public static func text(_ entry: AuditEntry) -> String {
        "#\(entry.id)  \(ISO8601DateFormatter().string(from: entry.createdAt))  \(entry.action.rawValue)  \(entry.target)  "
            + "by \(entry.actor)\(entry.role.map { " (\($0.rawValue))" } ?? "") on \(entry.node)"
            + (entry.sourceAddress.map { " from \($0)" } ?? "")
    }
}
