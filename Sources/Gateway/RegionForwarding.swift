import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import SignalboxCore

/// Requests pinned to another region are passed, unchanged and streamed, to a live node of that
/// region found through gossip — never served here.
extension Gateway {
    static let forwardedHeader = HTTPField.Name("X-Signalbox-Forwarded-By")!

    /// The node's forwarding client, or the process-wide one (pooled connections to the other nodes).
    var forwardingClient: HTTPClient { dependencies.forwardingClient ?? HTTPClient.shared }

    func forwardToRegion(_ region: String, request: Request, body: ByteBuffer) async throws -> Response {
        let here = dependencies.configuration.region
        // A forwarded request that still is not in its region would loop: refuse it.
        guard request.headers[Self.forwardedHeader] == nil else {
            throw Self.outOfRegion(region, here: here, detail: "it was forwarded here by another node")
        }
        guard let cluster = dependencies.cluster else {
            throw Self.outOfRegion(region, here: here, detail: "this node is not in a cluster")
        }
        // Live nodes only: `leaving` ones announced a drain and take nothing new.
        let candidates = await cluster.agent.members.filter { $0.region == region && $0.status == .alive && $0.apiURL != nil }.shuffled()
        guard !candidates.isEmpty else {
            throw Self.outOfRegion(region, here: here, detail: "no live node of \(region) is known")
        }
        // A node that cannot be reached is skipped for the next (at most three tries); an answer,
        // even an error, is passed on as it is.
        var target = candidates[0]
        var response: HTTPClientResponse?
        var failures: [String] = []
        for candidate in candidates.prefix(3) {
            guard let base = candidate.apiURL else { continue }
            target = candidate
            var outbound = HTTPClientRequest(url: base + "/api/v1/chat/completions")
            outbound.method = .POST
            for field in request.headers where ![.contentLength, .connection, .transferEncoding].contains(field.name) {
                outbound.headers.add(name: field.name.rawName, value: field.value)
            }
            outbound.headers.add(name: Self.forwardedHeader.rawName, value: dependencies.configuration.nodeID)
            outbound.body = .bytes(body)
            do {
                response = try await forwardingClient.execute(outbound, timeout: .seconds(600))
                break
            } catch where Self.neverReached(error) {
                failures.append("\(candidate.id): \(error)")
                dependencies.logger.warning("cannot forward to a node of the request's region; trying another",
                                            metadata: ["region": "\(region)", "node": "\(candidate.id)", "error": "\(error)"])
            }
        }
        guard let response else {
            throw APIError(status: 502, message: "Forwarding to region \(region) failed: \(failures.joined(separator: "; "))",
                           metadata: ["region": .string(region), "node": .string(target.id)])
        }
        var headers = HTTPFields()
        for header in response.headers where !["content-length", "connection", "transfer-encoding"].contains(header.name.lowercased()) {
            if let name = HTTPField.Name(header.name) { headers.append(HTTPField(name: name, value: header.value)) }
        }
        headers[HTTPField.Name("X-Signalbox-Served-By")!] = target.id
        return Response(status: .init(code: Int(response.status.code)), headers: headers,
                        body: ResponseBody(asyncSequence: response.body))
    }

    /// Whether the request certainly did not reach the node (so another node may take it).
    static func neverReached(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? HTTPClientError, error == .connectTimeout { return true }
        if let error = error as? ChannelError, case .connectTimeout = error { return true }
        if let error = error as? IOError, [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH].contains(error.errnoCode) { return true }
        return false
    }

    static func outOfRegion(_ region: String, here: String, detail: String) -> APIError {
        APIError(status: 503, message: "This key's requests must be served in region \(region); this node serves \(here) and "
                 + "\(detail). The request was not served out of region.",
                 metadata: ["reason": "region_unavailable", "region": .string(region)])
    }
}
