import Foundation
import Gateway
import Gossip
import HTTPTypes
import Hummingbird
import Ledger
import NIOCore
import SignalboxCore

extension ConsolePages {
    // MARK: Overview

    enum Period: String, CaseIterable {
        case hour, day, week

        var label: String {
            switch self {
            case .hour: "Last hour"
            case .day: "Last 24 hours"
            case .week: "Last 7 days"
            }
        }
        var minutes: Int { self == .hour ? 60 : self == .day ? 1440 : 10080 }
        /// Buckets of the request chart: how many, how many minutes each.
        var buckets: (count: Int, width: Int) { self == .hour ? (60, 1) : self == .day ? (24, 60) : (7, 1440) }
    }

    func overview(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let visit = try await visit(request, context)
        let period = Self.parameter(request, "period").flatMap(Period.init(rawValue:)) ?? .day
        let since = now.addingTimeInterval(-Double(period.minutes) * 60)
        let query = EntryQuery(since: since)
        let spendRows = try await ledger.spend(query, by: period == .week ? .day : .hour)
        let spent = spendRows.reduce(Money.zero) { $0 + $1.amount }
        let charged = spendRows.reduce(0) { $0 + $1.requests }
        var tops: [[String: Any]] = []
        for (label, grouping) in [("models", SpendGrouping.model), ("providers", .provider), ("keys", .key)] {
            let rows = try await ledger.spend(query, by: grouping).prefix(5)
            tops.append(["label": label, "rows": rows.map(Self.spendRow)])
        }
        let tally = api.dependencies.metrics.tally.withLockedValue { $0 }
        let total = tally.total(minutes: period.minutes)
        let series = tally.series(count: period.buckets.count, width: period.buckets.width)
        let labelFormat = period == .week ? "MM-dd" : "HH:mm"
        let requestPoints = series.map { bucket in
            ChartPoint(
                label: Self.clock(minute: bucket.minute, format: labelFormat), value: Double(bucket.requests),
                valueText: String(bucket.requests), display: "\(bucket.requests) requests, \(bucket.failed) failed")
        }
        func rate(_ count: Int) -> String {
            total.requests > 0 ? String(format: "%.1f%%", Double(count) * 100 / Double(total.requests)) : "–"
        }
        return page(
            "overview", title: "Overview", section: "overview", visit: visit, request: request,
            [
                "periods": Period.allCases.map { ["value": $0.rawValue, "label": $0.label, "selected": $0 == period] as [String: Any] },
                "requests": total.requests, "spend": spent.decimalString, "charged": charged, "errorRate": rate(total.failed),
                "failoverRate": rate(total.failovers), "firstToken": total.meanFirstTokenMillis.map { "\($0) ms" } ?? "–",
                "spendChart": SVGChart.bars(Self.spendTimeline(spendRows, period: period, now: now), title: "Spend, \(period.label)"),
                "requestChart": SVGChart.bars(requestPoints, title: "Requests on this node, \(period.label)"), "tops": tops,
            ])
    }

    static func clock(minute: Int64, format: String) -> String {
        let formatter = DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = format
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(minute * 60)))
    }

    static func spendRow(_ row: SpendRow) -> [String: Any] {
        ["group": row.group.isEmpty ? "(none)" : row.group, "amount": row.amount.decimalString, "requests": row.requests]
    }

    static func spendPoint(_ row: SpendRow) -> ChartPoint {
        ChartPoint(
            label: row.group.isEmpty ? "(none)" : row.group, value: Double(row.amount.nanos) / Double(Money.scale),
            valueText: "$" + row.amount.decimalString, display: "$\(row.amount.decimalString) over \(row.requests) requests")
    }

    /// Spend per hour (or day) over the whole period, hours without charges included, so the
    /// chart's time axis is even. Labels are the hour (`HH:00`) or the day (`MM-DD`).
    static func spendTimeline(_ rows: [SpendRow], period: Period, now: Date) -> [ChartPoint] {
        let byGroup = Dictionary(rows.map { ($0.group, $0) }, uniquingKeysWith: { first, _ in first })
        let (count, step, keyFormat, labelFormat): (Int, Int64, String, String) =
            switch period {
            case .hour: (2, 60, "yyyy-MM-dd'T'HH:00", "HH:00")
            case .day: (24, 60, "yyyy-MM-dd'T'HH:00", "HH:00")
            case .week: (7, 1440, "yyyy-MM-dd", "MM-dd")
            }
        let current = Int64(now.timeIntervalSince1970 / 60)
        return (0..<count).reversed().map { back in
            let minute = current - Int64(back) * step
            let key = clock(minute: minute, format: keyFormat)
            let row = byGroup[key] ?? SpendRow(group: key, amount: .zero, requests: 0)
            var point = spendPoint(row)
            point.label = clock(minute: minute, format: labelFormat)
            return point
        }
    }

    // MARK: Accounts

    func accounts(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await accountsPage(request, visit: try await visit(request, context))
    }

    func accountsPage(_ request: Request, visit: Visit, form: FormState = FormState(), status: HTTPResponse.Status = .ok) async throws
        -> Response
    {
        let search = Self.parameter(request, "search")
        let rows = try await ledger.accounts(AccountQuery(search: search, after: Self.parameter(request, "after"), limit: Self.pageSize))
        return page(
            "accounts", title: "Accounts", section: "accounts", visit: visit, request: request, status: status, form: form,
            [
                "search": search ?? "",
                "rows": rows.map { row in
                    [
                        "id": row.account.id, "name": row.account.name, "balance": row.balance.decimalString,
                        "held": row.held.decimalString, "available": row.available.decimalString, "leases": row.openLeases,
                        "region": row.account.region ?? "",
                    ] as [String: Any]
                },
                "next": rows.count == Self.pageSize ? rows.last?.account.id : nil,
            ])
    }

    func createAccount(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let region = form["region"].flatMap { $0.isEmpty ? nil : $0 }
        do {
            let account = try await administration.createAccount(
                name: form["name"] ?? "", id: form["id"], region: region, by: visit.actor)
            throw done("/console/accounts/\(Self.queryEncode(account.id))", "Created account \(account.id).", visit: visit)
        } catch let error as APIError where error.statusCode == 400 || error.statusCode == 409 {
            return try await accountsPage(
                request, visit: visit, form: .failed(error, values: form, field: error.statusCode == 409 ? "id" : "name"),
                status: .badRequest)
        }
    }

    func account(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await accountPage(request, context, visit: try await visit(request, context))
    }

    func accountPage(
        _ request: Request, _ context: GatewayRequestContext, visit: Visit, form: FormState = FormState(), status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let id = context.parameters.get("account") ?? ""
        guard let account = try await ledger.account(id: id), !account.isSystem else { throw APIError.notFound("No account \(id)") }
        let balance = try await ledger.balance(account: id)
        return page(
            "account", title: "Account \(id)", section: "accounts", visit: visit, request: request, status: status, form: form,
            [
                "account": [
                    "id": account.id, "name": account.name, "balance": balance.balance.decimalString,
                    "held": (balance.balance - balance.available).decimalString, "available": balance.available.decimalString,
                    "region": account.region as Any? ?? nil,
                ].compactMapValues { $0 },
                // A fresh reference in the form: a double-clicked grant records once.
                "grantReference": "console-grant-" + UUID().uuidString.lowercased(),
            ])
    }

    func purchase(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let id = context.parameters.get("account") ?? ""
        do {
            let amount = try RouterAPI.amount(.string(form["amount"] ?? ""), field: "amount")
            guard form["confirm"] == "1" else {
                // The exact fee, before anything is recorded; the reference makes the confirmation safe to repeat.
                try Administration.require(.billing, of: visit.actor)
                guard try await ledger.account(id: id)?.isSystem == false else { throw APIError.notFound("No account \(id)") }
                let fee = Billing.purchaseFee(for: amount)
                let reference = form["reference"].flatMap { $0.isEmpty ? nil : $0 } ?? "console-" + UUID().uuidString.lowercased()
                return page(
                    "purchase-confirm", title: "Confirm purchase", section: "accounts", visit: visit, request: request,
                    [
                        "account": id, "credit": amount.decimalString, "fee": fee.decimalString,
                        "total": (amount + fee).decimalString, "reference": reference,
                    ])
            }
            let result = try await administration.addCredit(
                account: id, amount: amount, kind: .purchase, reference: form["reference"], by: visit.actor)
            let message =
                result.alreadyRecorded
                ? "Purchase \(result.reference) was recorded before; nothing new was recorded."
                : "Credited $\(result.credit.decimalString) to \(id); fee $\(result.fee.decimalString); the buyer pays $\(result.charged.decimalString)."
            throw done("/console/accounts/\(Self.queryEncode(id))", message, visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            return try await accountPage(
                request, context, visit: visit, form: .failed(error, values: form, field: "amount"), status: .badRequest)
        }
    }

    func grant(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let id = context.parameters.get("account") ?? ""
        do {
            let amount = try RouterAPI.amount(.string(form["amount"] ?? ""), field: "grant_amount")
            let result = try await administration.addCredit(
                account: id, amount: amount, kind: .grant, reference: form["reference"], by: visit.actor)
            throw done(
                "/console/accounts/\(Self.queryEncode(id))",
                result.alreadyRecorded ? "Grant \(result.reference) was recorded before." : "Granted $\(amount.decimalString) to \(id).",
                visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            var failed = FormState.failed(error, values: form, field: "grant_amount")
            if failed.errors["amount"] != nil { failed.errors = ["grant_amount": error.message] }
            return try await accountPage(request, context, visit: visit, form: failed, status: .badRequest)
        }
    }

    func pinAccount(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let id = context.parameters.get("account") ?? ""
        let region = form["region"].flatMap {
            $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces)
        }
        do {
            _ = try await administration.pinAccount(id, region: region, by: visit.actor)
            throw done(
                "/console/accounts/\(Self.queryEncode(id))", region.map { "Pinned \(id) to \($0)." } ?? "Unpinned \(id).", visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            return try await accountPage(
                request, context, visit: visit, form: .failed(error, values: form, field: "region"), status: .badRequest)
        }
    }

    // MARK: Keys

    func keys(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await keysPage(request, visit: try await visit(request, context), account: Self.parameter(request, "account"))
    }

    func keysPage(
        _ request: Request, visit: Visit, account: String?, form: FormState = FormState(), status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        var rows: [[String: Any]] = []
        if let account {
            for key in try await ledger.keys(account: account) {
                let usage = try await ledger.keyUsage(keyID: key.id, now: now)
                let row: [String: Any?] = [
                    "id": key.id, "hash": key.hash, "name": key.name, "label": key.label, "role": key.adminRole?.rawValue ?? "",
                    "limit": key.limit?.decimalString, "reset": key.limitReset ?? "all time",
                    "spent": usage.spent(resetting: key.limitReset).decimalString, "region": key.region ?? "", "disabled": key.disabled,
                    "windows": ["daily", "weekly", "monthly"].map { ["value": $0, "selected": $0 == key.limitReset] as [String: Any] },
                ]
                rows.append(row.compactMapValues { $0 })
            }
        }
        return page(
            "keys", title: "Keys", section: "keys", visit: visit, request: request, status: status, form: form,
            ["account": account, "rows": rows])
    }

    func createKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let account = form["account"] ?? ""
        do {
            var limit: Money?
            if let text = form["limit"], !text.isEmpty { limit = try RouterAPI.amount(.string(text), field: "limit") }
            let reset = form["limit_reset"].flatMap { $0.isEmpty ? nil : $0 }
            let region = form["region"].flatMap { $0.isEmpty ? nil : $0 }
            var role: AdminRole?
            if let text = form["role"], !text.isEmpty {
                guard let parsed = AdminRole(rawValue: text) else {
                    throw Administration.invalid("role", "Choose admin, billing or auditor")
                }
                role = parsed
            }
            let (record, secret) = try await administration.createKey(
                Administration.KeyDraft(
                    account: account, name: form["name"] ?? "", limit: limit, limitReset: reset, region: region, adminRole: role),
                by: visit.actor)
            return page(
                "key-created", title: "Key created", section: "keys", visit: visit, request: request,
                ["secret": secret, "id": record.id, "label": record.label, "role": record.adminRole?.rawValue, "account": record.accountID])
        } catch let error as APIError where error.statusCode == 400 {
            return try await keysPage(
                request, visit: visit, account: account, form: .failed(error, values: form, field: "name"), status: .badRequest)
        }
    }

    func updateKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let hash = context.parameters.get("hash") ?? ""
        let account = form["account"] ?? ""
        do {
            let limitText = form["limit"] ?? ""
            let limit: Money? = limitText.isEmpty ? nil : try RouterAPI.amount(.string(limitText), field: "limit")
            let reset = form["limit_reset"].flatMap { $0.isEmpty ? nil : $0 }
            let region = form["region"].flatMap { $0.isEmpty ? nil : $0 }
            let key = try await administration.updateKey(
                hash: hash, KeyUpdate(limit: .some(limit), limitReset: .some(reset), region: .some(region)), by: visit.actor)
            throw done("/console/keys?account=\(Self.queryEncode(key.accountID))", "Saved key \(key.id).", visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            return try await keysPage(
                request, visit: visit, account: account, form: .failed(error, values: form, field: "limit"), status: .badRequest)
        }
    }

    func revokeKey(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, _) = try await submission(request, context)
        let key = try await administration.updateKey(hash: context.parameters.get("hash") ?? "", KeyUpdate(disabled: true), by: visit.actor)
        throw done("/console/keys?account=\(Self.queryEncode(key.accountID))", "Revoked key \(key.id).", visit: visit)
    }

    // MARK: Ledger

    static let entryFilters = ["account", "key", "model", "provider", "kind", "since", "until", "generation"]

    /// The page's filters as a query string (for the next page and the export), without the cursor.
    static func filterQuery(_ request: Request, names: [String]) -> String {
        names.compactMap { name in parameter(request, name).map { "\(name)=\(queryEncode($0))" } }.joined(separator: "&")
    }

    func ledger(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let visit = try await visit(request, context)
        var form = FormState()
        var rows: [[String: Any]] = []
        var next: Int64?
        do {
            var query = try RouterAPI.entryQuery(request.uri.queryParameters)
            query.limit = Self.pageSize
            let entries = try await ledger.entries(query)
            rows = entries.map { entry in
                let transfer = entry.transfer
                let row: [String: Any?] = [
                    "id": transfer.id, "time": Self.time(transfer.createdAt), "kind": transfer.kind.rawValue,
                    "debit": transfer.debitAccount, "credit": transfer.creditAccount, "amount": transfer.amount.decimalString,
                    "model": entry.model ?? "", "key": transfer.keyID ?? "", "generation": transfer.generationID,
                    "memo": transfer.memo ?? "",
                    "reversible": transfer.kind != .reversal,
                ]
                return row.compactMapValues { $0 }
            }
            if entries.count == Self.pageSize { next = entries.last?.transfer.id }
        } catch let error as APIError where error.statusCode == 400 {
            form.errors["filters"] = error.message
        }
        let kind = Self.parameter(request, "kind")
        return page(
            "ledger", title: "Ledger", section: "ledger", visit: visit, request: request,
            status: form.errors.isEmpty ? .ok : .badRequest, form: form,
            [
                "filters": Dictionary(uniqueKeysWithValues: Self.entryFilters.map { ($0, Self.parameter(request, $0) ?? "") }),
                "kinds": TransferKind.allCases.map { ["value": $0.rawValue, "selected": $0.rawValue == kind] as [String: Any] },
                "rows": rows, "next": next, "query": Self.filterQuery(request, names: Self.entryFilters), "pageSize": Self.pageSize,
            ])
    }

    func ledgerExport(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await visit(request, context)
        var query = try RouterAPI.entryQuery(request.uri.queryParameters)
        query.limit = Int.max
        query.before = nil
        return try await EntryFormat.csvExport(query, from: ledger)
    }

    func reverse(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        guard let id = context.parameters.get("entry").flatMap(Int64.init) else { throw APIError.notFound("No such entry") }
        do {
            let (reversal, recorded) = try await administration.reverse(entry: id, reason: form["reason"] ?? "", by: visit.actor)
            throw done(
                reversal.generationID.map { "/console/ledger?generation=\(Self.queryEncode($0))" } ?? "/console/ledger",
                recorded
                    ? "Posted the reversal of entry \(id): $\(reversal.amount.decimalString) back to \(reversal.creditAccount)."
                    : "Entry \(id) was reversed before; nothing new was posted.", visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            throw done("/console/ledger", "Not reversed: \(error.message)", visit: visit)
        }
    }

    func generation(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let visit = try await visit(request, context)
        let id = context.parameters.get("generation") ?? ""
        guard let record = try await ledger.generation(id: id) else { throw APIError.notFound("No generation \(id)") }
        return page(
            "generation", title: "Generation \(id)", section: "ledger", visit: visit, request: request,
            [
                "id": record.id, "model": record.model, "provider": record.providerName ?? "–", "cost": record.cost.decimalString,
                "prompt": record.usage.promptTokens, "completion": record.usage.completionTokens,
                "reasoning": record.usage.reasoningTokens > 0 ? record.usage.reasoningTokens : nil,
                "cached": record.usage.cachedTokens > 0 ? record.usage.cachedTokens : nil, "latency": record.latencyMs,
                "generationTime": record.generationTimeMs, "streamed": record.streamed, "cancelled": record.cancelled,
                "finish": record.finishReason ?? "–", "account": record.accountID, "key": record.keyID ?? "–",
                "time": Self.time(record.createdAt),
                "attempts": record.attempts.enumerated().map { index, attempt in
                    [
                        "number": index + 1, "provider": attempt.provider, "providerName": attempt.providerName, "model": attempt.model,
                        "status": attempt.status, "statusClass": attempt.status == "success" || attempt.status == "ok" ? "ok" : "failed",
                        "latency": attempt.latencyMs, "providerCost": attempt.providerCost.decimalString, "error": attempt.error ?? "",
                    ] as [String: Any]
                },
            ])
    }

    // MARK: Spend

    func spend(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let visit = try await visit(request, context)
        let by = Self.parameter(request, "by").flatMap(SpendGrouping.init(rawValue:)) ?? .day
        var form = FormState()
        var rows: [SpendRow] = []
        do {
            rows = try await ledger.spend(try RouterAPI.entryQuery(request.uri.queryParameters), by: by)
        } catch let error as APIError where error.statusCode == 400 {
            form.errors["filters"] = error.message
        }
        let chartRows = by == .day || by == .hour ? rows.sorted { $0.group < $1.group } : Array(rows.prefix(20))
        return page(
            "spend", title: "Spend", section: "spend", visit: visit, request: request, status: form.errors.isEmpty ? .ok : .badRequest,
            form: form,
            [
                "by": by.rawValue,
                "groupings": SpendGrouping.allCases.map { ["value": $0.rawValue, "selected": $0 == by] as [String: Any] },
                "filters": [
                    "account": Self.parameter(request, "account") ?? "", "since": Self.parameter(request, "since") ?? "",
                    "until": Self.parameter(request, "until") ?? "",
                ],
                "rows": rows.map(Self.spendRow), "chart": SVGChart.bars(chartRows.map(Self.spendPoint), title: "Spend by \(by.rawValue)"),
                "total": rows.reduce(Money.zero) { $0 + $1.amount }.decimalString, "totalRequests": rows.reduce(0) { $0 + $1.requests },
            ])
    }

    // MARK: Cluster

    func cluster(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await clusterPage(request, visit: try await visit(request, context))
    }

    func clusterPage(_ request: Request, visit: Visit, form: FormState = FormState(), status: HTTPResponse.Status = .ok) async throws
        -> Response
    {
        let dependencies = api.dependencies
        let configuration = dependencies.configuration
        var members: [(id: String, address: String, region: String, state: String, incarnation: UInt64, isSelf: Bool)] = []
        if let cluster = dependencies.cluster {
            let myself = await cluster.agent.myself
            for member in await cluster.agent.members {
                members.append(
                    (
                        member.id, member.address.description, member.region, member.status.rawValue, member.incarnation,
                        member.id == myself.id
                    ))
            }
        } else {
            members.append((configuration.nodeID, "\(configuration.host):\(configuration.port)", configuration.region, "alive", 0, true))
        }
        let regions = Set(members.map(\.region)).union([configuration.region]).sorted()
        // The health matrix: each endpoint, as this node and every reporting node saw it.
        let health = dependencies.health
        var reports = health.remoteReports()
        reports[configuration.nodeID] = health.localReport()
        let nodes = reports.keys.sorted()
        let merged = health.snapshot()
        let endpointKeys = Set(reports.values.flatMap(\.endpoints.keys)).union(merged.endpoints.keys).sorted()
        let endpoints: [[String: Any]] = endpointKeys.map { key in
            let circuit = merged.endpoints[key]?.breaker.state(at: health.now).rawValue ?? "closed"
            let cells: [[String: Any]] = nodes.map { node in
                guard let summary = reports[node]?.endpoints[key] else { return ["reported": false] }
                let attempts = summary.recent.successes + summary.recent.failures
                let uptime = attempts > 0 ? String(format: "%.1f%%", Double(summary.recent.successes) * 100 / Double(attempts)) : "no calls"
                return ["reported": true, "uptime": uptime, "routedAround": summary.degraded]
            }
            return ["key": key.replacingOccurrences(of: "|", with: " · "), "circuit": circuit, "cells": cells]
        }
        let tables: [[String: Any]] = regions.map { region in
            let table = dependencies.cluster?.table(for: region) ?? RegionRoutingTable()
            return [
                "region": region, "set": dependencies.cluster?.tableIsSet(for: region) ?? false,
                "allowedText": table.allowed.joined(separator: ", "), "preferredText": table.preferred.joined(separator: ", "),
            ]
        }
        return page(
            "cluster", title: "Cluster", section: "cluster", visit: visit, request: request, status: status, form: form,
            [
                "clustered": dependencies.cluster != nil,
                "regions": regions.map { region in
                    [
                        "region": region,
                        "members": members.filter { $0.region == region }.map {
                            ["id": $0.id, "address": $0.address, "state": $0.state, "incarnation": $0.incarnation, "isSelf": $0.isSelf]
                                as [String: Any]
                        },
                    ] as [String: Any]
                },
                "nodes": nodes, "endpoints": endpoints, "tables": tables,
            ])
    }

    func setRouting(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        let region = context.parameters.get("region") ?? ""
        func list(_ name: String) -> [String] {
            (form[name] ?? "").split(whereSeparator: { $0 == "," || $0.isWhitespace }).map(String.init)
        }
        do {
            _ = try await administration.setRoutingTable(
                region: region, allowed: list("allowed"), preferred: list("preferred"), by: visit.actor)
            throw done("/console/cluster", "Saved the routing table of \(region); every node applies it within seconds.", visit: visit)
        } catch let error as APIError where error.statusCode == 400 || error.statusCode == 409 {
            return try await clusterPage(request, visit: visit, form: .failed(error, values: form, field: "allowed"), status: .badRequest)
        }
    }

    // MARK: Audit and access

    static let auditFilters = ["actor", "action", "target", "since", "until"]

    func audit(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let visit = try await visit(request, context)
        var form = FormState()
        var rows: [[String: Any]] = []
        var next: Int64?
        do {
            var query = try RouterAPI.auditQuery(request.uri.queryParameters)
            query.limit = Self.pageSize
            let entries = try await ledger.auditEntries(query)
            rows = entries.map { entry in
                let row: [String: Any?] = [
                    "time": Self.time(entry.createdAt), "action": entry.action.rawValue, "target": entry.target, "actor": entry.actor,
                    "role": entry.role?.rawValue ?? "", "node": entry.node, "source": entry.sourceAddress ?? "",
                    "before": entry.before.map(JSONWriter.string), "after": entry.after.map(JSONWriter.string),
                ]
                return row.compactMapValues { $0 }
            }
            if entries.count == Self.pageSize { next = entries.last?.id }
        } catch let error as APIError where error.statusCode == 400 {
            form.errors["filters"] = error.message
        }
        let action = Self.parameter(request, "action")
        return page(
            "audit", title: "Audit", section: "audit", visit: visit, request: request, status: form.errors.isEmpty ? .ok : .badRequest,
            form: form,
            [
                "filters": Dictionary(uniqueKeysWithValues: Self.auditFilters.map { ($0, Self.parameter(request, $0) ?? "") }),
                "actions": AuditAction.allCases.map { ["value": $0.rawValue, "selected": $0.rawValue == action] as [String: Any] },
                "rows": rows, "next": next, "query": Self.filterQuery(request, names: Self.auditFilters),
            ])
    }

    func auditExport(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        _ = try await visit(request, context)
        var query = try RouterAPI.auditQuery(request.uri.queryParameters)
        query.limit = 100_000
        let entries = try await ledger.auditEntries(query)
        return Response(
            status: .ok, headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"audit.csv\""],
            body: .init(byteBuffer: ByteBuffer(string: AuditFormat.csv(entries))))
    }

    func access(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try await accessPage(request, visit: try await visit(request, context))
    }

    func accessPage(_ request: Request, visit: Visit, form: FormState = FormState(), status: HTTPResponse.Status = .ok) async throws
        -> Response
    {
        let mappings = try await ledger.roleMappings()
        let oidc = console.settings.oidc
        return page(
            "access", title: "Access", section: "access", visit: visit, request: request, status: status, form: form,
            [
                "oidc": oidc.map { ["issuer": $0.issuer, "clientID": $0.clientID, "groupsClaim": $0.groupsClaim] },
                "mappings": mappings.map { ["claim": $0.claim.rawValue, "value": $0.value, "role": $0.role.rawValue] },
            ])
    }

    func setRoleMapping(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        let (visit, form) = try await submission(request, context)
        guard let claim = form["claim"].flatMap(RoleMapping.Claim.init(rawValue:)) else {
            return try await accessPage(
                request, visit: visit, form: FormState(values: form, errors: ["value": "Choose a claim"]), status: .badRequest)
        }
        var role: AdminRole?
        if let text = form["role"], !text.isEmpty {
            guard let parsed = AdminRole(rawValue: text) else {
                return try await accessPage(
                    request, visit: visit, form: FormState(values: form, errors: ["value": "Choose a role"]), status: .badRequest)
            }
            role = parsed
        }
        do {
            try await administration.setRoleMapping(claim, value: form["value"] ?? "", role: role, by: visit.actor)
            throw done(
                "/console/access",
                role.map { "Mapped \(claim.rawValue) \(form["value"] ?? "") to \($0.rawValue)." } ?? "Removed the mapping.", visit: visit)
        } catch let error as APIError where error.statusCode == 400 {
            return try await accessPage(request, visit: visit, form: .failed(error, values: form, field: "value"), status: .badRequest)
        }
    }
}
