import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct IdempotencyTests {
    func chat(_ node: TestNode, key: String, stream: Bool = false) async throws -> TestNode.Reply {
        var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
        request.headers.add(name: "Idempotency-Key", value: key)
        request.body = .bytes(
            ByteBuffer(
                string:
                    #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "stream": \#(stream), "messages": [{"role": "user", "content": "Once only"}]}"#
            ))
        let response = try await node.http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        return TestNode.Reply(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: String(buffer: body))
    }

    @Test func aRetriedRequestReturnsTheFirstGenerationAndIsChargedOnce() async throws {
        try await TestNode.with { node in
            let first = try await chat(node, key: "retry-1")
            let again = try await chat(node, key: "retry-1")
            let id = try #require(first.json?["id"]?.stringValue)
            #expect(again.json?["id"]?.stringValue == id && again.header("X-Generation-Id") == id)
            #expect(again.json?["choices"] == first.json?["choices"])
            let streamedFirst = try await chat(node, key: "retry-stream", stream: true)
            let streamed = try await chat(node, key: "retry-stream", stream: true)
            let streamedID = try #require(streamedFirst.header("X-Generation-Id"))
            let events = TestNode.events(streamed.body)
            #expect(events.last == "[DONE]" && streamed.header("X-Generation-Id") == streamedID)
            func text(_ body: String) -> String {
                TestNode.events(body).dropLast().compactMap {
                    try? JSONParser.parse($0)["choices"]?.arrayValue?.first?["delta"]?["content"]?.stringValue
                }.joined()
            }
            #expect(text(streamed.body) == text(streamedFirst.body))
            let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
            #expect(charges.count == 2)
            let balance = try await node.settledBalance()
            #expect(balance.available == balance.balance)  // the retries reserved nothing
            #expect(try await node.simulatorRequests("openai") == 2)
        }
    }

    @Test func aKeyReusedForADifferentRequestIs422AndChargesNothing() async throws {
        try await TestNode.with { node in
            #expect(try await chat(node, key: "mine").status == 200)
            // Another stream flag, body or API key with the same Idempotency-Key.
            let streamed = try await chat(node, key: "mine", stream: true)
            #expect(streamed.status == 422)
            #expect(streamed.json?["error"]?["metadata"]?["error_type"] == "idempotency_key_reused")
            var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
            request.headers.add(name: "Idempotency-Key", value: "mine")
            request.body = .bytes(
                ByteBuffer(
                    string:
                        #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "Something else"}]}"#))
            #expect(try await node.http.execute(request, timeout: .seconds(30)).status.code == 422)
            let other = APIKeyFormat.generate()
            try await node.ledger.insertKey(
                KeyRecord(
                    id: "key-2", accountID: node.account, hash: APIKeyFormat.hash(other),
                    label: APIKeyFormat.label(other), name: "second"))
            request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(other)")
            request.body = .bytes(
                ByteBuffer(
                    string:
                        #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "stream": false, "messages": [{"role": "user", "content": "Once only"}]}"#
                ))
            #expect(try await node.http.execute(request, timeout: .seconds(30)).status.code == 422)
            let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
            #expect(charges.count == 1)
            #expect(try await node.simulatorRequests("openai") == 1)
        }
    }

    @Test func aDuplicateWhileTheFirstRunsIsAConflictAndAFailureCanBeRetried() async throws {
        try await TestNode.with { node in
            // Slow enough that the first is still running, even on a loaded machine, when the duplicate arrives
            // 1.5 s later (the simulator counts a request only once it has answered it, so it cannot be polled):
            // openai misses the 2 s first-token deadline, then azure answers after 1.5 s, ~3.5 s in all.
            try await node.fault(#"{"provider": "openai", "kind": "slow", "delay_ms": 5000, "count": 1}"#)
            try await node.fault(#"{"provider": "azure", "kind": "slow", "delay_ms": 1500, "count": 1}"#)
            async let first = chat(node, key: "dup")
            try await Task.sleep(for: .milliseconds(1500))
            let duplicate = try await chat(node, key: "dup")
            #expect(duplicate.status == 409)
            #expect(try await first.status == 200)

            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 500, "count": 1}"#)
            try await node.fault(#"{"provider": "azure", "kind": "status", "status": 500, "count": 1}"#)
            #expect(try await chat(node, key: "fails-first").status == 502)
            #expect(try await chat(node, key: "fails-first").status == 200)  // the failure released the key
        }
    }
}
