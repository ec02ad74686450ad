import Foundation
import Gateway
import Ledger
import Logging
import Node
import SignalboxCore
import Testing

/// The OpenAPI document describes every route a node registers, and nothing it does not, and
/// Docs/openapi.json is the document as a node serves it.
@Suite struct OpenAPIDocumentTests {
    /// The console's catch-all (its own 404 page), which OpenAPI has no path for.
    static let undescribable: Set<String> = ["GET /console/**"]

    @Test func everyRegisteredRouteIsDescribedAndNothingElse() async throws {
        let ledger = try await SQLiteLedgerStore.open(path: nil)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("signalbox-openapi-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var configuration = NodeConfiguration(
            gateway: GatewayConfiguration(), catalog: try Catalog.shipped(), providerKeys: [:], ledger: .store(ledger),
            spoolPath: scratch + ".spool")
        configuration.console.enabled = true
        let node = try SignalboxNode.assemble(configuration, ledger: ledger, logger: Logger(label: "test")) { _ in }
        await node.close()
        try await ledger.close()

        let registered = Set(node.routes).subtracting(Self.undescribable)
        let described = Set(APIDocument.routes)
        #expect(registered.count > 60, "the console's routes are registered too")
        #expect(registered.subtracting(described).sorted() == [], "registered routes the document lacks")
        #expect(described.subtracting(registered).sorted() == [], "documented routes no node serves")
        #expect(APIDocument.routes.count == described.count, "each route is described once")
    }

    @Test func theCommittedDocumentIsTheServedOne() throws {
        let committed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Docs/openapi.json")
        let text = try String(contentsOf: committed, encoding: .utf8)
        #expect(text == APIDocument.text, "regenerate it: .build/debug/signalbox openapi > Docs/openapi.json")
        #expect(try JSONParser.parse(text) == APIDocument.document)
    }

    @Test func everyOperationHasAnIdAResponseAndItsPathParameters() throws {
        guard case .object(let paths)? = APIDocument.document["paths"] else { throw Failure("no paths") }
        var ids = Set<String>()
        for (path, item) in paths {
            for (method, operation) in item.objectValue ?? [:] {
                let id = try #require(operation["operationId"]?.stringValue, "\(method) \(path)")
                #expect(ids.insert(id).inserted, "operationId \(id) is used twice")
                #expect(operation["responses"]?["default"] != nil, "\(id) documents its errors")
                let declared = Set(
                    (operation["parameters"]?.arrayValue ?? []).filter { $0["in"] == "path" }.compactMap { $0["name"]?.stringValue })
                let inPath = Set(path.split(separator: "/").filter { $0.hasPrefix("{") }.map { String($0.dropFirst().dropLast()) })
                #expect(declared == inPath, "\(id) declares its path parameters")
            }
        }
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }
}
