import Foundation
import SignalboxCore

/// Something an operator is told about by webhook (Docs/operations.md, "Alerts").
public struct AlertEvent: Sendable, Hashable {
    public enum Kind: String, Sendable, CaseIterable, Codable {
        case balanceLow = "account.balance_low"
        case keyLimit80 = "key.limit_80"
        case keyLimit100 = "key.limit_100"
        case circuitOpened = "provider.circuit_opened"
        case circuitClosed = "provider.circuit_closed"
        case nodeDead = "node.dead"
        case nodeLeft = "node.left"
        case ledgerUnreachable = "ledger.unreachable"
        case spoolAge = "ledger.spool_age"
        case overage = "overage.booked"

        public var severity: String {
            switch self {
            case .circuitClosed: "info"
            case .keyLimit80, .nodeLeft, .overage, .balanceLow: "warning"
            case .keyLimit100, .circuitOpened, .nodeDead, .ledgerUnreachable, .spoolAge: "critical"
            }
        }
    }

    /// The same on every node that could see the event (a receiver may deduplicate by it).
    public var id: String
    public var kind: Kind
    public var occurredAt: Date
    /// One line for a person.
    public var summary: String
    /// What the event is about (account, key id, endpoint, node, amounts as exact decimals).
    public var data: JSONObject

    public init(id: String, kind: Kind, occurredAt: Date = Date(), summary: String, data: JSONObject) {
        self.id = id
        self.kind = kind
        self.occurredAt = occurredAt
        self.summary = summary
        self.data = data
    }

    /// The webhook body: Signalbox's own JSON, or Slack's incoming-webhook `text`.
    func body(format: AlertWebhook.Format, node: String, region: String) -> [UInt8] {
        switch format {
        case .signalbox:
            return JSONWriter.bytes([
                "id": .string(id), "type": .string(kind.rawValue), "severity": .string(kind.severity),
                "occurred_at": .string(ISO8601DateFormatter().string(from: occurredAt)), "node": .string(node),
                "region": .string(region), "summary": .string(summary), "data": .object(data),
            ])
        case .slack:
            let icon = kind.severity == "critical" ? ":rotating_light:" : kind.severity == "warning" ? ":warning:" : ":information_source:"
            return JSONWriter.bytes(["text": .string("\(icon) *\(kind.rawValue)* \(summary) (node \(node), \(region))")])
        }
    }
}
