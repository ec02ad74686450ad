import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct KeyManagementTests {
    @Test func theAdminKeyCreatesUpdatesAndDeletesKeys() async throws {
        try await TestNode.with { node in
            let admin = try await node.makeAdminKey()
            #expect(try await node.request("/api/v1/keys", method: .GET).status == 403)  // an inference key
            #expect(try await node.request("/api/v1/keys", method: .GET, authorized: false).status == 401)

            let created = try await node.request(
                "/api/v1/keys", body: #"{"name": "ci", "limit": 1.5, "limit_reset": "monthly"}"#, key: admin)
            #expect(created.status == 201)
            let secret = try #require(created.json?["key"]?.stringValue)
            let hash = try #require(created.json?["data"]?["hash"]?.stringValue)
            #expect(hash == APIKeyFormat.hash(secret) && created.json?["data"]?["limit"] == 1.5)

            let chat = try await node.request(
                "/api/v1/chat/completions",
                body: """
                    {"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
                    """, key: secret)
            #expect(chat.status == 200)
            let fetched = try await node.request("/api/v1/keys/\(hash)", method: .GET, key: admin)
            #expect((fetched.json?["data"]?["usage"]?.numericValue ?? 0) > 0)
            #expect(try await node.request("/api/v1/keys", method: .GET, key: admin).json?["data"]?.arrayValue?.count == 3)

            let disabled = try await node.request(
                "/api/v1/keys/\(hash)", method: .PATCH, body: #"{"disabled": true, "name": "off"}"#, key: admin)
            #expect(disabled.json?["data"]?["disabled"] == true && disabled.json?["data"]?["name"] == "off")
            #expect(try await node.request("/api/v1/key", method: .GET, key: secret).status == 401)

            let deleted = try await node.request("/api/v1/keys/\(hash)", method: .DELETE, key: admin)
            #expect(deleted.json == ["deleted": true])
            #expect(try await node.request("/api/v1/keys/\(hash)", method: .GET, key: admin).status == 404)
            #expect(try await node.request("/api/v1/keys", body: #"{"limit": 1}"#, key: admin).status == 400)
        }
    }
}
