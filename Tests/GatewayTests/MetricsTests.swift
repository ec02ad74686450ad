import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct MetricsTests {
    @Test func metricsCountRequestsAttemptsAndFailovers() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 503, "count": 1}"#)
            #expect(try await node.chat().status == 200)
            let metrics = try await node.request("/metrics", method: .GET, authorized: false)
            #expect(metrics.status == 200)
            #expect(metrics.body.contains(#"signalbox_upstream_attempts_total{provider="openai",outcome="503"} 1"#))
            #expect(metrics.body.contains(#"signalbox_upstream_attempts_total{provider="azure",outcome="ok"} 1"#))
            #expect(metrics.body.contains("signalbox_failovers_total 1"))
            #expect(metrics.body.contains(#"signalbox_http_requests_total{route="/api/v1/chat/completions",status="200"} 1"#))
            #expect(metrics.body.contains(#"signalbox_upstream_first_token_seconds_count{provider="azure"} 1"#))
        }
    }
}
