import AsyncHTTPClient
import Foundation
import Gateway
import Ledger
import SignalboxTestKit
import NIOCore
import SignalboxCore
import NIOHTTP1
import Testing

@Suite struct ChatCompletionsTests {
    @Test func chargeIsVisibleAsSoonAsTheResponseEnds() async throws {
        try await TestNode.with { node in
            let reply = try await node.chat()
            #expect(reply.status == 200)
            let json = try #require(reply.json)
            let id = try #require(json["id"]?.stringValue)
            #expect(reply.header("X-Generation-Id") == id)
            #expect(json["provider"] == "OpenAI")
            let cost = try #require(try await node.ledger.generation(id: id)?.cost)
            #expect(cost > .zero)
            #expect(json["usage"]?["cost"] == .double(Double(cost.decimalString)!))
            let balance = try await node.settledBalance()
            #expect(balance.balance == Money(dollars: 10) - cost)
            #expect(balance.available == balance.balance)  // no hold left behind
            let key = try await node.request("/api/v1/key", method: .GET)
            #expect(key.json?["data"]?["usage"] == .double(Double(cost.decimalString)!))
            #expect(try await node.ledger.verify().isConsistent)
        }
    }

    @Test func streamingSendsProcessingCommentThenChunksUsageAndDone() async throws {
        try await TestNode.with { node in
            let reply = try await node.chat(stream: true)
            #expect(reply.status == 200)
            #expect(reply.header("content-type") == "text/event-stream")
            #expect(reply.body.hasPrefix(": SIGNALBOX PROCESSING\n\n"))
            let events = TestNode.events(reply.body)
            #expect(events.last == "[DONE]")
            let usage = try JSONDecoder().decode(JSONValue.self, from: Data(events[events.count - 2].utf8))
            #expect(usage["choices"] == [])
            #expect(usage["usage"]?["cost"] != nil)
            let ids = Set(
                events.dropLast().compactMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))["id"]?.stringValue })
            #expect(ids.count == 1 && ids.first == reply.header("X-Generation-Id"))
        }
    }

    @Test func keepAliveCommentsRepeatUntilTheFirstToken() async throws {
        try await TestNode.with(configure: { $0.keepAliveInterval = .milliseconds(100) }) { node in
            try await node.fault(#"{"provider": "openai", "kind": "slow", "delay_ms": 450}"#)
            let reply = try await node.chat(stream: true)
            let comments = reply.body.components(separatedBy: ": SIGNALBOX PROCESSING").count - 1
            #expect(comments >= 3)
            #expect(TestNode.events(reply.body).last == "[DONE]")
        }
    }

    @Test(arguments: [
        #"{"provider": "openai", "kind": "status", "status": 503}"#,
        #"{"provider": "openai", "kind": "status", "status": 401}"#,
        #"{"provider": "openai", "kind": "timeout"}"#,
        #"{"provider": "openai", "kind": "reset"}"#,
        #"{"provider": "openai", "kind": "malformed"}"#,
        #"{"provider": "openai", "kind": "stall", "after_chunks": 3}"#,
        #"{"provider": "openai", "kind": "drop_after_chunks", "after_chunks": 3}"#,
    ])
    func aFailingProviderIsRoutedAroundBeforeAnythingReachesTheClient(fault: String) async throws {
        let afterOutput = fault.contains("after_chunks")
        for stream in [false, true] {
            for fallbacks in [true, false] {
                try await TestNode.with { node in
                    try await node.fault(fault)
                    // Pin openai first (an explicit order is honoured even after it failed once).
                    let pin = #", "provider": {"order": ["openai"], "allow_fallbacks": \#(fallbacks)}"#
                    let reply = try await node.chat(stream: stream, extra: pin)
                    let label = "\(fault) stream=\(stream) fallbacks=\(fallbacks)"
                    let id = try #require(reply.header("X-Generation-Id"), "\(label)")
                    let record = try #require(try await node.generation(id), "\(label)")
                    let balance = try await node.settledBalance()
                    #expect(balance.available == balance.balance, "no hold left behind: \(label)")
                    if stream {
                        let events = TestNode.events(reply.body)
                        #expect(reply.status == 200 && events.last == "[DONE]", "\(label)")
                        let failedInBand = events.contains { $0.contains(#""finish_reason":"error""#) }
                        if afterOutput || !fallbacks {
                            // tokens reached the client, or no fallback allowed: the stream ends with an error chunk
                            #expect(failedInBand, "\(label)")
                            #expect(record.cost == .zero && balance.balance == Money(dollars: 10), "\(label)")
                            #expect(try await node.simulatorRequests("azure") == 0, "\(label)")
                            return
                        }
                        let first = try JSONParser.parse(events.first ?? "")
                        #expect(first["provider"] == "Azure" && !failedInBand, "\(label)")
                    } else {
                        if !fallbacks {
                            #expect(reply.status >= 400 && reply.json?["error"] != nil, "\(label)")
                            #expect(record.cost == .zero && balance.balance == Money(dollars: 10), "\(label)")
                            #expect(try await node.simulatorRequests("azure") == 0, "\(label)")
                            return
                        }
                        #expect(reply.status == 200 && reply.json?["provider"] == "Azure", "\(label)")
                    }
                    // served by the fallback and charged exactly once, at its price
                    #expect(record.attempts.map(\.provider) == ["openai", "azure"], "\(label)")
                    #expect(record.cost > .zero && balance.balance == Money(dollars: 10) - record.cost, "\(label)")
                    let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
                    #expect(charges.count == 1 && charges.first?.creditAccount == "provider:azure", "\(label)")
                    #expect(try await node.ledger.verify().isConsistent)
                }
            }
        }
    }

    @Test func upstreamBadRequestIsReturnedAsIsWithoutFailover() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 400}"#)
            let reply = try await node.chat()
            #expect(reply.status == 400)
            #expect(reply.json?["error"]?["metadata"]?["provider_name"] == "OpenAI")
            #expect(reply.json?["error"]?["metadata"]?["raw"]?.stringValue?.contains("invalid_request_error") == true)
            #expect(try await node.simulatorRequests("azure") == 0)
        }
    }

    @Test func whenEveryAttemptFailsTheClientGets502WithTheAttemptsAndPaysNothing() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 500}"#)
            try await node.fault(#"{"provider": "azure", "kind": "status", "status": 503}"#)
            let reply = try await node.chat()
            #expect(reply.status == 502)
            let metadata = reply.json?["error"]?["metadata"]
            #expect(metadata?["previous_errors"]?.arrayValue?.count == 2)
            #expect(metadata?["provider_name"] == "Azure")
            let id = try #require(reply.header("X-Generation-Id"))
            let record = try #require(try await node.generation(id))
            #expect(record.cost == .zero && record.attempts.map(\.status) == ["500", "503"])
            #expect(try await node.settledBalance().balance == Money(dollars: 10))
        }
    }

    @Test func allowFallbacksFalseStopsAtTheFirstFailure() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 429}"#)
            let reply = try await node.chat(extra: #", "provider": {"order": ["openai"], "allow_fallbacks": false}"#)
            #expect(reply.status == 429)
            #expect(try await node.simulatorRequests("azure") == 0)
        }
    }

    @Test func aStreamBrokenAfterOutputEndsWithAnErrorChunkAndCostsNothing() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "xai", "kind": "stall", "after_chunks": 4}"#)
            let reply = try await node.chat(model: "x-ai/grok-4.3", stream: true)
            let events = TestNode.events(reply.body)
            #expect(events.last == "[DONE]")
            let error = try JSONDecoder().decode(JSONValue.self, from: Data(events[events.count - 2].utf8))
            #expect(error["error"]?["code"] == 502)
            #expect(error["choices"]?.arrayValue?.first?["finish_reason"] == "error")
            let record = try #require(try await node.generation(reply.header("X-Generation-Id") ?? ""))
            #expect(record.finishReason == "error" && record.cost == .zero)
            #expect(try await node.settledBalance() == AccountBalance(balance: Money(dollars: 10), available: Money(dollars: 10)))
        }
    }

    @Test func aClientThatHangsUpIsChargedOnlyForTokensGeneratedSoFar() async throws {
        // Tokens 250 ms apart: the hang-up must stop the upstream within about a second, even on a loaded machine.
        try await TestNode.with(simulator: .init(firstTokenDelay: .milliseconds(5), interTokenDelay: .milliseconds(250))) { node in
            var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
            request.body = .bytes(
                ByteBuffer(
                    string: #"{"model": "x-ai/grok-4.3", "stream": true, "messages": [{"role": "user", "content": "long answer please"}]}"#)
            )
            let (started, signal) = AsyncStream<String>.makeStream()
            let client = Task {
                let response = try await node.http.execute(request, timeout: .seconds(30))
                signal.yield(response.headers.first(name: "X-Generation-Id") ?? "")
                var chunks = 0
                for try await _ in response.body {
                    chunks += 1
                    if chunks == 4 { signal.yield("streaming") }
                }
            }
            var iterator = started.makeAsyncIterator()
            let id = try #require(await iterator.next())
            _ = await iterator.next()
            client.cancel()
            let record = try #require(try await node.generation(id))
            #expect(record.cancelled)
            #expect(record.usage.completionTokens > 0 && record.usage.completionTokens < 8)
            #expect(record.cost > .zero)
            let balance = try await node.settledBalance()
            #expect(balance.balance == Money(dollars: 10) - record.cost)
            #expect(balance.available == balance.balance)
        }
    }
}

extension ChatCompletionsTests {
    @Test func aNonStreamedRequestWhoseClientLeavesStopsUpstreamAndIsChargedForWhatWasGenerated() async throws {
        try await TestNode.with(simulator: .init(firstTokenDelay: .milliseconds(5), interTokenDelay: .milliseconds(300))) { node in
            var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
            request.body = .bytes(
                ByteBuffer(string: #"{"model": "x-ai/grok-4.3", "messages": [{"role": "user", "content": "a slow answer"}]}"#))
            let client = Task { try await node.http.execute(request, timeout: .seconds(30)) }
            // Leave once the upstream is generating (a loaded machine may take a while to get there).
            let started = ContinuousClock.now
            while try await node.simulatorRequests("xai") == 0, ContinuousClock.now - started < .seconds(20) {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(700))  // a few of the upstream's 300 ms tokens
            client.cancel()
            let left = ContinuousClock.now
            // The settlement lands soon after the client left, not when the upstream would have finished.
            var charge: Transfer?
            while charge == nil, ContinuousClock.now - left < .seconds(5) {
                charge = try await node.ledger.entries(account: node.account, limit: 5).first { $0.kind == .charge }
                try await Task.sleep(for: .milliseconds(50))
            }
            let settled = try #require(charge)
            #expect(ContinuousClock.now - left < .milliseconds(1500))
            let generationID = try #require(settled.generationID)
            let record = try #require(try await node.generation(generationID))
            #expect(record.cancelled)
            #expect(record.usage.completionTokens > 0 && record.usage.completionTokens < 8)
            #expect(record.attempts.last?.status == "cancelled")
            let balance = try await node.settledBalance()
            #expect(balance.balance == Money(dollars: 10) - record.cost && balance.available == balance.balance)
        }
    }
}
