import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import SignalboxCore
import Testing
@testable import SimProvider

let chatBody = #"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello simulator"}], "max_tokens": 100}"#

func app(_ simulator: Simulator = Simulator(configuration: .init(firstTokenDelay: .zero, interTokenDelay: .zero)))
    -> some ApplicationProtocol
{
    Application(router: simulator.buildRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
}

func decode(_ buffer: ByteBuffer) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(buffer.readableBytesView))
}

@Suite struct SimulatorTests {
    @Test func answersDeterministicallyWithRealisticUsage() async throws {
        try await app().test(.live) { client in
            var answers: [JSONValue] = []
            for _ in 0..<2 {
                try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) {
                    response in
                    #expect(response.status == .ok)
                    answers.append(try decode(response.body))
                }
            }
            let first = answers[0]
            #expect(first["object"] == "chat.completion")
            #expect(
                first["choices"]?.arrayValue?.first?["message"]?["content"]
                    == answers[1]["choices"]?.arrayValue?.first?["message"]?["content"])
            let usage = try #require(first["usage"])
            #expect((usage["prompt_tokens"]?.intValue ?? 0) > 0)
            #expect((usage["completion_tokens"]?.intValue ?? 0) >= 8)
        }
    }

    @Test func maxTokensCutsTheAnswerWithFinishReasonLength() async throws {
        let body = #"{"model": "m", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}"#
        try await app().test(.live) { client in
            try await client.execute(uri: "/groq/v1/chat/completions", method: .post, body: ByteBuffer(string: body)) { response in
                let json = try decode(response.body)
                #expect(json["usage"]?["completion_tokens"] == 3)
                #expect(json["choices"]?.arrayValue?.first?["finish_reason"] == "length")
            }
        }
    }

    @Test func streamsSSEWithUsageAndDone() async throws {
        let body =
            #"{"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hello"}]}"#
        try await app().test(.live) { client in
            try await client.execute(uri: "/together/v1/chat/completions", method: .post, body: ByteBuffer(string: body)) { response in
                #expect(response.headers[.contentType] == "text/event-stream")
                let events = String(buffer: response.body).components(separatedBy: "\n\n").filter { !$0.isEmpty }
                #expect(events.last == "data: [DONE]")
                let usage = try JSONDecoder().decode(JSONValue.self, from: Data(events[events.count - 2].dropFirst(6).utf8))
                #expect(usage["choices"] == [])
                #expect((usage["usage"]?["completion_tokens"]?.intValue ?? 0) == events.count - 4)
            }
        }
    }

    @Test func statusFaultAnswersWithTheProvidersErrorBodyForItsCount() async throws {
        try await app().test(.live) { client in
            let fault = #"{"provider": "openai", "kind": "status", "status": 429, "count": 1}"#
            try await client.execute(uri: "/_sim/faults", method: .post, body: ByteBuffer(string: fault)) { #expect($0.status == .ok) }
            try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) { response in
                #expect(response.status == .tooManyRequests)
                #expect(response.headers[.retryAfter] == "1")
                let body = try decode(response.body)
                #expect(body["error"]?["type"] == "rate_limit_error")
            }
            try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/_sim/stats", method: .get) { response in
                let stats = try decode(response.body)
                #expect(stats["providers"]?["openai"]?["requests"] == 2)
                #expect(stats["providers"]?["openai"]?["faulted"] == 1)
            }
        }
    }

    @Test func faultsMatchProviderAndModelAndClear() async throws {
        try await app().test(.live) { client in
            let fault = #"{"provider": "openai", "model": "other-model", "kind": "status", "status": 500}"#
            try await client.execute(uri: "/_sim/faults", method: .post, body: ByteBuffer(string: fault)) { _ in }
            try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) {
                #expect($0.status == .ok)
            }
            try await client.execute(
                uri: "/_sim/faults", method: .post, body: ByteBuffer(string: #"{"provider": "openai", "kind": "malformed"}"#)
            ) { _ in }
            try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) { response in
                #expect((try? decode(response.body)) == nil)
            }
            try await client.execute(uri: "/_sim/faults", method: .delete) { _ in }
            try await client.execute(uri: "/openai/v1/chat/completions", method: .post, body: ByteBuffer(string: chatBody)) {
                #expect($0.status == .ok)
            }
        }
    }

    @Test func rejectsAnUnknownFaultKind() async throws {
        try await app().test(.live) { client in
            try await client.execute(
                uri: "/_sim/faults", method: .post, body: ByteBuffer(string: #"{"provider": "x", "kind": "gremlins"}"#)
            ) {
                #expect($0.status == .badRequest)
            }
        }
    }
}
