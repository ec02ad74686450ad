import ArgumentParser
import Gateway

/// `signalbox openapi`: prints the OpenAPI 3.1 document every node serves at
/// `/api/v1/openapi.json` (as committed in Docs/openapi.json).
struct OpenAPICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "openapi", abstract: "Print the OpenAPI document of the node's HTTP API (Docs/openapi.json).")

    func run() { print(APIDocument.text, terminator: "") }
}
