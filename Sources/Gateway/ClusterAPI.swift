import Foundation
import Gossip
import Hummingbird
import SignalboxCore

/// `/api/v1/admin/cluster/…` and `/api/v1/admin/routing/{region}`, with the admin key.
extension RouterAPI {
    func registerClusterRoutes(_ api: RouterGroup<AuthenticatedRequestContext>) {
        api.get("/admin/cluster/members") { request, _ in
            return JSONResponse.make(["data": .array(try await clusterMembers())])
        }
        api.get("/admin/cluster/health") { request, _ in
            let now = dependencies.health.now
            var nodes: JSONObject = [dependencies.configuration.nodeID: Self.reportJSON(dependencies.health.localReport(), now: now)]
            for (node, report) in dependencies.health.remoteReports() { nodes[node] = Self.reportJSON(report, now: now) }
            let merged = dependencies.health.snapshot()
            let routedAround = merged.endpoints.filter { $0.value.isDegraded(at: now) }.keys.sorted()
            return JSONResponse.make(["data": ["nodes": .object(nodes), "routed_around": .array(routedAround.map { .string($0) })]])
        }
        api.get("/admin/cluster/state") { request, _ in
            guard let cluster = dependencies.cluster else {
                throw APIError(status: 409, message: "This node is not in a cluster; start it with --gossip-bind")
            }
            let ages = await cluster.agent.stateAges()
            let entries: [JSONValue] = await cluster.agent.stateEntries.map { entry in
                [
                    "key": .string(entry.key), "version": .int(Int64(clamping: entry.version)), "writer": .string(entry.writer),
                    "bytes": .int(Int64(entry.value.utf8.count)), "age_ms": ages[entry.key].map { .int(Int64(clamping: $0)) } ?? nil,
                ]
            }
            return JSONResponse.make(["data": .array(entries), "clock_skew_ms": .int(await cluster.agent.clockSkewMillis())])
        }
        api.get("/admin/cluster/keyring") { request, _ in
            guard let cluster = dependencies.cluster else {
                throw APIError(status: 409, message: "This node is not in a cluster; start it with --gossip-bind")
            }
            let status = await cluster.agent.keyringStatus
            var peers: JSONObject = [:]
            for (node, key) in status.peers.sorted(by: { $0.key < $1.key }) { peers[node] = .string(key) }
            return JSONResponse.make([
                "data": [
                    "node": .string(cluster.nodeID), "sends_with": .string(status.primary),
                    "accepts": .array(status.accepted.map { .string($0) }), "peers_send_with": .object(peers),
                ]
            ])
        }
        api.get("/admin/routing/:region") { request, context in
            let region = context.parameters.get("region") ?? ""
            let table = dependencies.cluster?.table(for: region) ?? RegionRoutingTable()
            return JSONResponse.make(Self.tableJSON(region: region, table, isSet: dependencies.cluster?.tableIsSet(for: region) ?? false))
        }
        api.put("/admin/routing/:region") { request, context in
            let region = context.parameters.get("region") ?? ""
            let body = try await body(request)
            func list(_ name: String) throws -> [String] {
                guard let value = body[name] else { return [] }
                guard let items = value.arrayValue?.compactMap(\.stringValue), items.count == value.arrayValue?.count else {
                    throw Administration.invalid(name, "'\(name)' must be an array of provider slugs or endpoint tags")
                }
                return items
            }
            let table = try await administration.setRoutingTable(
                region: region, allowed: try list("allowed"), preferred: try list("preferred"), by: context.actor(node: nodeID))
            return JSONResponse.make(Self.tableJSON(region: region, table, isSet: true))
        }
    }

    /// Every member including this node (`self: true`); just this node when it runs alone.
    func clusterMembers() async throws -> [JSONValue] {
        guard let cluster = dependencies.cluster else {
            return [
                [
                    "id": .string(dependencies.configuration.nodeID), "region": .string(dependencies.configuration.region),
                    "address": nil, "state": "alive", "incarnation": 0, "self": true,
                ]
            ]
        }
        let myself = await cluster.agent.myself
        let offsets = await cluster.agent.clockOffsets()
        let keys = await cluster.agent.keyringStatus
        return await cluster.agent.members.map { member in
            let isSelf = member.id == myself.id
            return [
                "id": .string(member.id), "region": .string(member.region), "address": .string(member.address.description),
                "state": .string(member.status.rawValue), "incarnation": .int(Int64(clamping: member.incarnation)),
                "self": .bool(isSelf),
                "clock_offset_ms": isSelf ? .int(0) : offsets[member.id].map { .int($0) } ?? nil,
                "sends_with_key": .string(isSelf ? keys.primary : keys.peers[member.id] ?? ""),
            ]
        }
    }

    static func reportJSON(_ report: NodeHealthReport, now: Double) -> JSONValue {
        var endpoints: JSONObject = [:]
        for (key, summary) in report.endpoints.sorted(by: { $0.key < $1.key }) {
            let recent = summary.recent
            let attempts = recent.successes + recent.failures
            endpoints[key] = [
                "routed_around": .bool(summary.degraded),
                "uptime_last_5m": attempts > 0 ? .double((Double(recent.successes) * 10_000 / Double(attempts)).rounded() / 100) : nil,
                "latency_last_5m_ms": recent.firstTokenSamples > 0 ? .int(Int64(recent.firstTokenMillis / recent.firstTokenSamples)) : nil,
                "requests_last_5m": .int(Int64(attempts + recent.rateLimited)),
            ]
        }
        return [
            "reported_at": .double(report.at), "age_seconds": .double(((now - report.at) * 1000).rounded() / 1000),
            "endpoints": .object(endpoints),
        ]
    }

    static func tableJSON(region: String, _ table: RegionRoutingTable, isSet: Bool) -> JSONValue {
        [
            "region": .string(region), "allowed": .array(table.allowed.map { .string($0) }),
            "preferred": .array(table.preferred.map { .string($0) }), "set": .bool(isSet),
        ]
    }
}
