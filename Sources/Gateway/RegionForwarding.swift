import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import Providers
import SignalboxCore
import Tracing

/// Requests pinned to another region are passed, unchanged and streamed, to a live node of that
/// region found through gossip — never served here.
extension RouterAPI {
    static let forwardedHeader = HTTPField.Name("X-Signalbox-Forwarded-By")!

    /// How forwarded requests travel: the node's forwarding transport (TLS to peers when
    /// configured), else the upstream transport.
    var forwardingTransport: any UpstreamTransport { dependencies.forwardingTransport ?? dependencies.transport }

    func forwardToRegion(_ region: String, request: Request, body: ByteBuffer, trace: RequestTrace? = nil) async throws -> Response {
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
        var response: UpstreamResponse?
        var failures: [String] = []
        for candidate in candidates.prefix(3) {
            guard let base = candidate.apiURL else { continue }
            target = candidate
            var headers = request.headers.filter { ![.contentLength, .connection, .transferEncoding].contains($0.name) }
                .map { ($0.name.rawName, $0.value) }
            headers.append((Self.forwardedHeader.rawName, dependencies.configuration.nodeID))
            // The region's node continues this request's trace under a span for the forward.
            let span = trace?.child("forward \(region)", kind: .client)
            span?.updateAttributes { attributes in
                attributes["signalbox.region"] = region
                attributes["signalbox.node"] = candidate.id
            }
            if let span, let trace {
                headers.removeAll { ["traceparent", "tracestate"].contains($0.0.lowercased()) }
                headers += trace.propagation(span)
            }
            defer { span?.end() }
            do {
                response = try await forwardingTransport.send(
                    UpstreamRequest(url: base + request.uri.description, headers: headers, body: body))
                span?.attributes["http.response.status_code"] = response?.status
                break
            } catch let failure as UpstreamFailure where failure.neverReachedUpstream {
                failures.append("\(candidate.id): \(failure.message)")
                dependencies.logger.warning(
                    "cannot forward to a node of the request's region; trying another",
                    metadata: ["region": "\(region)", "node": "\(candidate.id)", "error": "\(failure.message)"])
            } catch let failure as UpstreamFailure {
                // It may have reached the node: never sent twice, answered as a gateway failure.
                throw APIError(
                    status: 502, message: "Forwarding to region \(region) failed: \(candidate.id): \(failure.message)",
                    metadata: ["region": .string(region), "node": .string(candidate.id)])
            }
        }
        guard let response else {
            throw APIError(
                status: 502, message: "Forwarding to region \(region) failed: \(failures.joined(separator: "; "))",
                metadata: ["region": .string(region), "node": .string(target.id)])
        }
        var headers = HTTPFields()
        for (name, value) in response.headers where !["content-length", "connection", "transfer-encoding"].contains(name.lowercased()) {
            if let name = HTTPField.Name(name) { headers.append(HTTPField(name: name, value: value)) }
        }
        headers[HTTPField.Name("X-Signalbox-Served-By")!] = target.id
        return Response(status: .init(code: response.status), headers: headers, body: ResponseBody(asyncSequence: response.body))
    }

    static func outOfRegion(_ region: String, here: String, detail: String) -> APIError {
        APIError(
            status: 503,
            message: "This key's requests must be served in region \(region); this node serves \(here) and "
                + "\(detail). The request was not served out of region.",
            metadata: ["reason": "region_unavailable", "region": .string(region)])
    }
}
