import Foundation
import Hummingbird
import Ledger
import SignalboxCore

/// How ledger entries are printed and exported.
public enum EntryFormat {
    public static let columns = [
        "id", "created_at", "kind", "debit", "credit", "amount", "key_id", "generation_id", "model", "provider", "memo",
    ]

    public static func fields(_ entry: LedgerEntry) -> [String] {
        let transfer = entry.transfer
        return [
            String(transfer.id), ISO8601DateFormatter().string(from: transfer.createdAt), transfer.kind.rawValue,
            transfer.debitAccount, transfer.creditAccount, transfer.amount.decimalString, transfer.keyID ?? "",
            transfer.generationID ?? "", entry.model ?? "", entry.provider ?? "", transfer.memo ?? "",
        ]
    }

    public static func json(_ entry: LedgerEntry) -> JSONValue {
        var object = JSONObject()
        for (column, value) in zip(columns, fields(entry)) {
            object[column] = column == "id" ? .int(entry.transfer.id) : value.isEmpty && column != "memo" ? nil : .string(value)
        }
        return .object(object)
    }

    public static func text(_ entry: LedgerEntry) -> String {
        let transfer = entry.transfer
        return "#\(transfer.id)  \(ISO8601DateFormatter().string(from: transfer.createdAt))  \(transfer.kind.rawValue)  "
            + "\(transfer.debitAccount) → \(transfer.creditAccount)  \(transfer.amount)"
            + (entry.model.map { "  \($0)" } ?? "") + (transfer.generationID.map { "  \($0)" } ?? "")
    }

    /// RFC 4180: a header row, then one row per entry; fields with commas, quotes or newlines quoted.
    public static func csv(_ entries: [LedgerEntry]) -> String { csvHeader + csvRows(entries) }

    public static var csvHeader: String { columns.joined(separator: ",") + "\r\n" }

    public static func csvRows(_ entries: [LedgerEntry]) -> String {
        var output = ""
        for entry in entries { output += fields(entry).map(csvField).joined(separator: ",") + "\r\n" }
        return output
    }

    public static func csvField(_ value: String) -> String {
        // By scalar: "\r\n" is one character, equal to neither "\r" nor "\n".
        guard value.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

extension EntryFormat {
    /// Every entry `query` matches (up to its limit) as a streamed CSV download, read page by page
    /// from one snapshot: the admin API's and the console's export. A ledger that does not answer
    /// fails before the 200.
    public static func csvExport(_ query: EntryQuery, from ledger: any ReportStore) async throws -> Response {
        _ = try await ledger.entries(EntryQuery(limit: 1))
        return Response(
            status: .ok,
            headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"ledger-entries.csv\""],
            body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: csvHeader))
                try await ledger.forEachEntry(query) { page in try await writer.write(ByteBuffer(string: csvRows(page))) }
                try await writer.finish(nil)
            })
    }
}

extension EntryQuery {
    /// A time for `since`/`until` filters: a UTC date (`2026-11-25`) or an ISO 8601 time.
    public static func parseTime(_ text: String) -> Date? {
        if let date = ISO8601DateFormatter().date(from: text) { return date }
        let day = ISO8601DateFormatter()
        day.formatOptions = [.withFullDate]
        return day.date(from: text)
    }
}
