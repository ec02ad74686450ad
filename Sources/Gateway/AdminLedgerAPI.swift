import Foundation
import HTTPTypes
import Hummingbird
import Ledger
import SignalboxCore

/// `/api/v1/admin/…`: the ledger for operators, with the admin key — the HTTP twin of the
/// `signalbox accounts|credits|ledger` commands (Docs/admin.md).
extension RouterAPI {
    func registerAdminLedgerRoutes(_ api: RouterGroup<AuthenticatedRequestContext>) {
        api.get("/admin/accounts") { request, _ in
            let parameters = request.uri.queryParameters
            let limit = try Self.pageLimit(parameters["limit"], default: 50)
            let rows = try await dependencies.ledger.accounts(
                AccountQuery(search: parameters["search"].map(String.init), after: parameters["after"].map(String.init), limit: limit))
            let next: JSONValue = rows.count == limit ? rows.last.map { .string($0.account.id) } ?? nil : nil
            return JSONResponse.make(["data": .array(rows.map(Self.accountJSON)), "next_after": next])
        }
        api.post("/admin/accounts") { request, context in
            let body = try await body(request)
            let account = try await administration.createAccount(
                name: body["name"]?.stringValue ?? "", id: body["id"]?.stringValue, region: try Self.region(body["region"]) ?? nil,
                by: context.actor(node: nodeID))
            return JSONResponse.make(
                ["id": .string(account.id), "name": .string(account.name), "region": account.region.map { .string($0) } ?? nil],
                status: .created)
        }
        api.patch("/admin/accounts/:account") { request, context in
            let account = context.parameters.get("account") ?? ""
            let body = try await body(request)
            guard let region = try Self.region(body["region"]) else {
                throw Administration.invalid("region", "Give 'region' (a name, or null to unpin)")
            }
            let pinned = try await administration.pinAccount(account, region: region, by: context.actor(node: nodeID))
            return JSONResponse.make(["id": .string(pinned.id), "region": pinned.region.map { .string($0) } ?? nil])
        }
        api.get("/admin/accounts/:account/balance") { request, context in
            let account = context.parameters.get("account") ?? ""
            guard try await dependencies.ledger.account(id: account) != nil else { throw APIError.notFound("Account \(account) not found") }
            let balance = try await dependencies.ledger.balance(account: account)
            return JSONResponse.make([
                "account": .string(account), "balance": .string(balance.balance.decimalString),
                "available": .string(balance.available.decimalString),
            ])
        }
        api.post("/admin/credits") { request, context in try await addCredit(request, context: context) }
        api.post("/admin/ledger/entries/:id/reversal") { request, context in
            guard let id = context.parameters.get("id").flatMap(Int64.init) else { throw APIError.notFound("No such entry") }
            let body = try await body(request)
            let (reversal, recorded) = try await administration.reverse(
                entry: id, reason: body["reason"]?.stringValue ?? "", by: context.actor(node: nodeID))
            return JSONResponse.make([
                "reversed": .int(id), "debit": .string(reversal.debitAccount), "credit": .string(reversal.creditAccount),
                "amount": .string(reversal.amount.decimalString), "memo": reversal.memo.map { .string($0) } ?? nil,
                "already_recorded": .bool(!recorded),
            ])
        }
        api.get("/admin/ledger/entries") { request, _ in
            var query = try Self.entryQuery(request.uri.queryParameters)
            if request.uri.queryParameters["format"] == "csv" {
                // An export: every matching row (or `limit` of them), streamed page by page.
                if request.uri.queryParameters["limit"] == nil { query.limit = Int.max }
                return try await EntryFormat.csvExport(query, from: dependencies.ledger)
            }
            let entries = try await dependencies.ledger.entries(query)
            // A full page has a cursor to the next: pass it back as `before`.
            let next: JSONValue = entries.count == query.limit ? entries.last.map { .int($0.transfer.id) } ?? nil : nil
            return JSONResponse.make(["data": .array(entries.map(EntryFormat.json)), "next_before": next])
        }
        api.get("/admin/ledger/spend") { request, _ in
            let by = request.uri.queryParameters["by"].map(String.init) ?? "day"
            guard let grouping = SpendGrouping(rawValue: by) else {
                throw APIError.badRequest("'by' must be one of \(SpendGrouping.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let rows = try await dependencies.ledger.spend(try Self.entryQuery(request.uri.queryParameters), by: grouping)
            if request.uri.queryParameters["format"] == "csv" {
                let csv =
                    "\(grouping.rawValue),amount,requests\r\n"
                    + rows.map { "\(EntryFormat.csvField($0.group)),\($0.amount.decimalString),\($0.requests)\r\n" }.joined()
                return Response(
                    status: .ok, headers: [.contentType: "text/csv; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: csv)))
            }
            return JSONResponse.make([
                "by": .string(grouping.rawValue),
                "data": .array(
                    rows.map {
                        ["group": .string($0.group), "amount": .string($0.amount.decimalString), "requests": .int(Int64($0.requests))]
                    }),
            ])
        }
        api.get("/admin/ledger/verify") { request, _ in
            return JSONResponse.make(try await dependencies.ledger.verify().json)
        }
    }

    /// `POST /api/v1/admin/credits` `{"account", "amount", "kind": "purchase"|"grant", "reference"}`:
    /// a purchase records the platform fee beside the credit; the reference makes retries safe.
    func addCredit(_ request: Request, context: AuthenticatedRequestContext) async throws -> Response {
        let body = try await body(request)
        guard let account = body["account"]?.stringValue else { throw Administration.invalid("account", "'account' is required") }
        let amount = try Self.amount(body["amount"], field: "amount")
        let kindName = body["kind"]?.stringValue ?? "purchase"
        guard let kind = Administration.CreditKind(rawValue: kindName) else {
            throw Administration.invalid("kind", "'kind' must be purchase or grant")
        }
        let result = try await administration.addCredit(
            account: account, amount: amount, kind: kind, reference: body["reference"]?.stringValue, by: context.actor(node: nodeID))
        return JSONResponse.make([
            "account": .string(account), "credit": .string(result.credit.decimalString), "fee": .string(result.fee.decimalString),
            "charged": .string(result.charged.decimalString), "reference": .string(result.reference),
            "balance": .string(result.balance.decimalString), "already_recorded": .bool(result.alreadyRecorded),
        ])
    }

    static func accountJSON(_ row: AccountSummary) -> JSONValue {
        [
            "id": .string(row.account.id), "name": .string(row.account.name), "region": row.account.region.map { .string($0) } ?? nil,
            "balance": .string(row.balance.decimalString), "held": .string(row.held.decimalString),
            "available": .string(row.available.decimalString), "open_leases": .int(Int64(row.openLeases)),
            "created_at": .string(ISO8601DateFormatter().string(from: row.account.createdAt)),
        ]
    }

    /// A page size from `limit`: 1 to 1,000.
    static func pageLimit(_ text: Substring?, default fallback: Int) throws -> Int {
        guard let text else { return fallback }
        guard let limit = Int(text), (1...1000).contains(limit) else { throw Administration.invalid("limit", "'limit' must be 1 to 1000") }
        return limit
    }

    /// A positive USD amount of at most `Money.maximumAmount`, as a JSON number or decimal string,
    /// with no more than nine decimal places; anything else is a 400 naming the field.
    public static func amount(_ value: JSONValue?, field: String) throws -> Money {
        guard let text = value?.decimalText ?? value?.stringValue, let parsed = ExactDecimal(text), parsed.significand > 0 else {
            throw Administration.invalid(field, "'\(field)' must be a positive number of USD")
        }
        guard let amount = Money(decimal: text), amount <= .maximumAmount else {
            guard parsed.fractionDigits <= 9 else { throw Administration.invalid(field, "'\(field)' has more than nine decimal places") }
            throw Administration.invalid(field, "'\(field)' must be at most \(Money.maximumAmount.decimalString) USD")
        }
        return amount
    }

    public static func entryQuery(_ parameters: Parameters) throws -> EntryQuery {
        func time(_ name: String) throws -> Date? {
            guard let text = parameters[Substring(name)] else { return nil }
            guard let date = EntryQuery.parseTime(String(text)) else {
                throw APIError.badRequest("'\(name)' must be a date (2026-11-25) or an ISO 8601 time")
            }
            return date
        }
        var kind: TransferKind?
        if let text = parameters["kind"] {
            guard let parsed = TransferKind(rawValue: String(text)) else { throw APIError.badRequest("Unknown kind \(text)") }
            kind = parsed
        }
        var limit = 100
        if let text = parameters["limit"] {
            guard let parsed = Int(text), (1...100_000).contains(parsed) else { throw APIError.badRequest("'limit' must be 1…100000") }
            limit = parsed
        }
        var before: Int64?
        if let text = parameters["before"] {
            guard let parsed = Int64(text), parsed > 0 else {
                throw APIError.badRequest("'before' must be an entry id (a page's next_before)")
            }
            before = parsed
        }
        var query = EntryQuery(
            account: parameters["account"].map(String.init), keyID: parameters["key"].map(String.init),
            model: parameters["model"].map(String.init), provider: parameters["provider"].map(String.init), kind: kind,
            generationID: parameters["generation"].map(String.init), since: try time("since"), until: try time("until"), limit: limit)
        query.before = before
        return query
    }
}
