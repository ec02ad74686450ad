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
            let ids = Set(events.dropLast().compactMap { try? JSONDecoder().decode(JSONValue.self, from: Data($0.utf8))["id"]?.stringValue })
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
        try await TestNode.with(simulator: .init(firstTokenDelay: .milliseconds(5), interTokenDelay: .milliseconds(100))) { node in
            var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
            request.body = .bytes(ByteBuffer(string: #"{"model": "x-ai/grok-4.3", "stream": true, "messages": [{"role": "user", "content": "long answer please"}]}"#))
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
            request.body = .bytes(ByteBuffer(string: #"{"model": "x-ai/grok-4.3", "messages": [{"role": "user", "content": "a slow answer"}]}"#))
            let client = Task { try await node.http.execute(request, timeout: .seconds(30)) }
            // Leave once the upstream is generating (a loaded machine may take a while to get there).
            let started = ContinuousClock.now
            while ContinuousClock.now - started < .seconds(20) {
                let stats = try await node.http.execute(HTTPClientRequest(url: node.simulatorURL + "/_sim/stats"), timeout: .seconds(5))
                let body = String(buffer: try await stats.body.collect(upTo: 1 << 20))
                if body.contains(#""requests":1"#) { break }
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

@Suite struct RequestErrorTests {
    @Test func missingOrUnknownKeyIs401() async throws {
        try await TestNode.with { node in
            let missing = try await node.request("/api/v1/chat/completions", body: "{}", authorized: false)
            #expect(missing.status == 401)
            #expect(missing.json?["error"]?["code"] == 401)
            let unknown = try await node.request("/api/v1/key", method: .GET, key: "sk-sb-v1-unknown")
            #expect(unknown.status == 401)
        }
    }

    @Test func oversizedBodyIs413() async throws {
        try await TestNode.with(configure: { $0.maxBodyBytes = 2048 }) { node in
            let big = String(repeating: "x", count: 4096)
            let reply = try await node.request("/api/v1/chat/completions", body: #"{"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "\#(big)"}]}"#)
            #expect(reply.status == 413)
            #expect(reply.json?["error"]?["code"] == 413)
        }
    }

    @Test func noMatchingEndpointIs404SayingWhichFilter() async throws {
        try await TestNode.with { node in
            let reply = try await node.chat(extra: #", "provider": {"only": ["nobody"]}"#)
            #expect(reply.status == 404)
            #expect(reply.json?["error"]?["message"]?.stringValue?.contains("only excluded openai, azure") == true)
        }
    }

    @Test func emptyAccountIsRefusedEvenOnFreeModels() async throws {
        try await TestNode.with(credits: "0") { node in
            let reply = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
            #expect(reply.status == 402)
        }
    }

    @Test func unaffordableRequestIs402WithTheAffordableTokenCount() async throws {
        try await TestNode.with(credits: "0.01") { node in
            let reply = try await node.request("/api/v1/chat/completions", body: """
                {"model": "openai/gpt-4o", "max_tokens": 16000, "messages": [{"role": "user", "content": "hi"}]}
                """)
            #expect(reply.status == 402)
            let metadata = reply.json?["error"]?["metadata"]
            #expect(metadata?["requested_tokens"] == 16000)
            // $0.01 minus the prompt estimate, at $10/M completion tokens: just under 1,000 tokens
            #expect((metadata?["affordable_tokens"]?.intValue ?? 0) > 990 && (metadata?["affordable_tokens"]?.intValue ?? 0) < 1000)
        }
    }

    @Test func endpointsWithoutCredentialsAreSkippedAnd503WhenNoneRemain() async throws {
        try await TestNode.with(providersWithoutKeys: ["openai"]) { node in
            let fallback = try await node.chat()
            #expect(fallback.json?["provider"] == "Azure")
        }
        try await TestNode.with(providersWithoutKeys: ["openai", "azure"]) { node in
            let reply = try await node.chat()
            #expect(reply.status == 503)
            #expect(reply.json?["error"]?["message"]?.stringValue?.contains("no API key is configured") == true)
            #expect(try await node.simulatorRequests("openai") == 0)
        }
    }

    @Test func unknownRoutesAndWrongMethodsAreJSON() async throws {
        try await TestNode.with { node in
            let missing = try await node.request("/api/v1/nothing", method: .GET)
            #expect(missing.status == 404 && missing.json?["error"]?["code"] == 404)
            let wrong = try await node.request("/api/v1/chat/completions", method: .GET)
            #expect(wrong.status == 405 && wrong.json?["error"]?["code"] == 405)
            #expect(wrong.header("Allow") == "POST")
        }
    }

    @Test func healthAndReadiness() async throws {
        try await TestNode.with { node in
            let health = try await node.request("/healthz", method: .GET, authorized: false)
            let ready = try await node.request("/readyz", method: .GET, authorized: false)
            #expect(health.status == 200 && ready.status == 200)
        }
    }
}

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

@Suite struct HealthRoutingTests {
    @Test func aProviderThatJustFailedIsTriedLastAndReportedDegraded() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 500, "count": 1}"#)
            let first = try await node.chat()
            let firstRecord = try #require(try await node.generation(first.json?["id"]?.stringValue ?? ""))
            #expect(firstRecord.attempts.map(\.provider) == ["openai", "azure"])
            // the fault is gone, but openai failed seconds ago: azure goes first now
            let second = try await node.chat()
            let secondRecord = try #require(try await node.generation(second.json?["id"]?.stringValue ?? ""))
            #expect(secondRecord.attempts.map(\.provider) == ["azure"])
            let endpoints = try await node.request("/api/v1/models/openai/gpt-4o-mini/endpoints", method: .GET, authorized: false)
            let listed = try #require(endpoints.json?["data"]?["endpoints"]?.arrayValue)
            let openai = try #require(listed.first { $0["tag"] == "openai" })
            let azure = try #require(listed.first { $0["tag"] == "azure" })
            #expect(openai["status"] == -1 && openai["uptime_last_5m"] == 0)
            #expect(azure["status"] == 0 && azure["uptime_last_5m"] == 100)
            // an explicit order still reaches the degraded provider first
            let pinned = try await node.chat(extra: #", "provider": {"order": ["openai"]}"#)
            #expect(pinned.json?["provider"] == "OpenAI")
        }
    }
}

@Suite struct InsuranceAndContextTests {
    @Test func aFailedAttemptsTokensAreAnInsuranceExpenseNotACharge() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "drop_after_chunks", "after_chunks": 5}"#)
            let reply = try await node.chat()
            #expect(reply.json?["provider"] == "Azure")
            let record = try #require(try await node.generation(reply.json?["id"]?.stringValue ?? ""))
            let failed = try #require(record.attempts.first)
            #expect(failed.provider == "openai" && failed.providerCost > .zero)
            let insurance = try await node.ledger.entries(account: Billing.SystemAccount.insurance, limit: 10)
            #expect(insurance.count == 1 && insurance[0].amount == failed.providerCost)
            #expect(insurance[0].creditAccount == "provider:openai" && insurance[0].kind == .insurance)
            // the client pays for Azure's answer only
            #expect(try await node.settledBalance().balance == Money(dollars: 10) - record.cost)
            #expect(try await node.ledger.verify().isConsistent)
        }
    }

    @Test func aContextLengthErrorMovesOnlyToAModelWithALargerContext() async throws {
        try await TestNode.with { node in
            try await node.fault(#"{"provider": "openai", "kind": "context_length"}"#)
            try await node.fault(#"{"provider": "azure", "kind": "context_length"}"#)
            let larger = try await node.chat(extra: #", "models": ["google/gemini-2.5-flash"]"#)
            #expect(larger.json?["model"] == "google/gemini-2.5-flash")
            let record = try #require(try await node.generation(larger.json?["id"]?.stringValue ?? ""))
            // azure has the same 128k context as openai, so it is skipped
            #expect(record.attempts.map(\.provider) == ["openai", "google-ai-studio"])
            let nowhere = try await node.chat()
            #expect(nowhere.status == 400)
            #expect(nowhere.json?["error"]?["metadata"]?["raw"]?.stringValue?.contains("context_length_exceeded") == true)
            #expect(try await node.simulatorRequests("azure") == 0)
        }
    }
}

@Suite struct IdempotencyTests {
    func chat(_ node: TestNode, key: String, stream: Bool = false) async throws -> TestNode.Reply {
        var request = HTTPClientRequest(url: node.url + "/api/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(node.key)")
        request.headers.add(name: "Idempotency-Key", value: key)
        request.body = .bytes(ByteBuffer(string: #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "stream": \#(stream), "messages": [{"role": "user", "content": "Once only"}]}"#))
        let response = try await node.http.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 20)
        return TestNode.Reply(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: String(buffer: body))
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
            request.body = .bytes(ByteBuffer(string: #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "messages": [{"role": "user", "content": "Something else"}]}"#))
            #expect(try await node.http.execute(request, timeout: .seconds(30)).status.code == 422)
            let other = APIKeyFormat.generate()
            try await node.ledger.insertKey(KeyRecord(id: "key-2", accountID: node.account, hash: APIKeyFormat.hash(other),
                                                      label: APIKeyFormat.label(other), name: "second"))
            request.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(other)")
            request.body = .bytes(ByteBuffer(string: #"{"model": "openai/gpt-4o-mini", "max_tokens": 30, "stream": false, "messages": [{"role": "user", "content": "Once only"}]}"#))
            #expect(try await node.http.execute(request, timeout: .seconds(30)).status.code == 422)
            let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
            #expect(charges.count == 1)
            #expect(try await node.simulatorRequests("openai") == 1)
        }
    }

    @Test func aDuplicateWhileTheFirstRunsIsAConflictAndAFailureCanBeRetried() async throws {
        try await TestNode.with { node in
            // Slow enough that the first is still running, even on a loaded machine, when the duplicate arrives
            // a second later (the simulator counts a request only once it has answered it, so it cannot be polled).
            try await node.fault(#"{"provider": "openai", "kind": "slow", "delay_ms": 5000, "count": 1}"#)
            async let first = chat(node, key: "dup")
            try await Task.sleep(for: .seconds(1))
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

@Suite struct LimitsTests {
    @Test func aKeyNeverSpendsBeyondItsLimit() async throws {
        try await TestNode.with { node in
            let secret = APIKeyFormat.generate()
            try await node.ledger.insertKey(KeyRecord(id: "limited", accountID: node.account, hash: APIKeyFormat.hash(secret),
                                                      label: APIKeyFormat.label(secret), name: "limited",
                                                      limit: Money(decimal: "0.0001")!, limitReset: "daily"))
            var statuses: [Int] = []
            for _ in 0..<12 {
                let reply = try await node.request("/api/v1/chat/completions", body: """
                    {"model": "openai/gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Spend a little"}]}
                    """, key: secret)
                statuses.append(reply.status)
                if reply.status == 402 {
                    #expect(reply.json?["error"]?["metadata"]?["limit_source"] == "key")
                    break
                }
            }
            #expect(statuses.first == 200 && statuses.last == 402)
            let usage = try await node.ledger.keyUsage(keyID: "limited", now: Date())
            #expect(usage.daily <= Money(decimal: "0.0001")! && usage.daily > .zero)
        }
    }

    @Test func concurrentRequestsOnALimitedKeyNeverSpendBeyondItsLimit() async throws {
        try await TestNode.with { node in
            let secret = APIKeyFormat.generate()
            let limit = Money(decimal: "0.0002")!
            try await node.ledger.insertKey(KeyRecord(id: "burst", accountID: node.account, hash: APIKeyFormat.hash(secret),
                                                      label: APIKeyFormat.label(secret), name: "burst", limit: limit))
            let body = """
                {"model": "openai/gpt-4o-mini", "max_tokens": 50, "provider": {"order": ["openai"]},
                 "messages": [{"role": "user", "content": "Everyone at once"}]}
                """
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<24 { group.addTask { try await node.request("/api/v1/chat/completions", body: body, key: secret).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.contains(200) && statuses.contains(402))
            #expect(Set(statuses).isSubset(of: [200, 402]))
            let usage = try await node.ledger.keyUsage(keyID: "burst", now: Date())
            #expect(usage.total > .zero && usage.total <= limit, "spent \(usage.total) of \(limit)")
            _ = try await node.settledBalance()  // and nothing stays reserved
        }
    }

    /// Free-tier minutes are calendar minutes: a test starts well inside one so its burst does not straddle two.
    static func awayFromAMinuteBoundary() async throws {
        let second = Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 60)
        if second > 40 { try await Task.sleep(for: .seconds(61 - second)) }
    }

    @Test func concurrentFreeRequestsNeverExceedTheLimit() async throws {
        try await TestNode.with { node in
            try await Self.awayFromAMinuteBoundary()
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<30 { group.addTask { try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free").status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == FreeTier.requestsPerMinute, "\(statuses)")
            #expect(statuses.filter { $0 == 429 }.count == 30 - FreeTier.requestsPerMinute)
        }
    }

    @Test func freeModelsAllowTwentyRequestsAMinute() async throws {
        try await TestNode.with { node in
            try await Self.awayFromAMinuteBoundary()
            for index in 0..<20 {
                let reply = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
                #expect(reply.status == 200, "request \(index)")
            }
            let limited = try await node.chat(model: "meta-llama/llama-3.3-70b-instruct:free")
            #expect(limited.status == 429)
            #expect(limited.header("X-RateLimit-Limit") == "20" && limited.header("X-RateLimit-Remaining") == "0")
            #expect(limited.header("X-RateLimit-Reset") != nil && limited.header("Retry-After") != nil)
            // paid models are not limited, and /key reports the day's free requests
            #expect(try await node.chat().status == 200)
            let key = try await node.request("/api/v1/key", method: .GET)
            #expect(key.json?["data"]?["free_model_daily_requests"] == ["limit": 50, "used": 20, "remaining": 30])
        }
    }
}

@Suite struct KeyManagementTests {
    @Test func theAdminKeyCreatesUpdatesAndDeletesKeys() async throws {
        try await TestNode.with { node in
            let admin = APIKeyFormat.generate()
            try await node.ledger.insertKey(KeyRecord(id: "admin", accountID: node.account, hash: APIKeyFormat.hash(admin),
                                                      label: APIKeyFormat.label(admin), name: "admin", isAdmin: true))
            #expect(try await node.request("/api/v1/keys", method: .GET).status == 403)  // an inference key
            #expect(try await node.request("/api/v1/keys", method: .GET, authorized: false).status == 401)

            let created = try await node.request("/api/v1/keys", body: #"{"name": "ci", "limit": 1.5, "limit_reset": "monthly"}"#, key: admin)
            #expect(created.status == 201)
            let secret = try #require(created.json?["key"]?.stringValue)
            let hash = try #require(created.json?["data"]?["hash"]?.stringValue)
            #expect(hash == APIKeyFormat.hash(secret) && created.json?["data"]?["limit"] == 1.5)

            let chat = try await node.request("/api/v1/chat/completions", body: """
                {"model": "openai/gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
                """, key: secret)
            #expect(chat.status == 200)
            let fetched = try await node.request("/api/v1/keys/\(hash)", method: .GET, key: admin)
            #expect((fetched.json?["data"]?["usage"]?.numericValue ?? 0) > 0)
            #expect(try await node.request("/api/v1/keys", method: .GET, key: admin).json?["data"]?.arrayValue?.count == 3)

            let disabled = try await node.request("/api/v1/keys/\(hash)", method: .PATCH, body: #"{"disabled": true, "name": "off"}"#, key: admin)
            #expect(disabled.json?["data"]?["disabled"] == true && disabled.json?["data"]?["name"] == "off")
            #expect(try await node.request("/api/v1/key", method: .GET, key: secret).status == 401)

            let deleted = try await node.request("/api/v1/keys/\(hash)", method: .DELETE, key: admin)
            #expect(deleted.json == ["deleted": true])
            #expect(try await node.request("/api/v1/keys/\(hash)", method: .GET, key: admin).status == 404)
            #expect(try await node.request("/api/v1/keys", body: #"{"limit": 1}"#, key: admin).status == 400)
        }
    }
}

/// The same node on the PostgreSQL ledger (runs in CI, where `.ci/run` starts PostgreSQL).
@Suite(.enabled(if: TestDatabase.required, "no PostgreSQL configured")) struct PostgresNodeTests {
    @Test func aNodeOnPostgresChargesFailsOverAndKeepsTheLedgerConsistent() async throws {
        try await TestNode.with(postgres: true) { node in
            let plain = try await node.chat()
            #expect(plain.status == 200)
            let streamed = try await node.chat(stream: true)
            #expect(TestNode.events(streamed.body).last == "[DONE]")
            try await node.fault(#"{"provider": "openai", "kind": "status", "status": 503, "count": 1}"#)
            let failedOver = try await node.chat(extra: #", "provider": {"order": ["openai"]}"#)
            #expect(failedOver.json?["provider"] == "Azure")
            let charges = try await node.ledger.entries(account: node.account, limit: 10).filter { $0.kind == .charge }
            #expect(charges.count == 3)
            let balance = try await node.settledBalance()
            #expect(balance.available == balance.balance)
            #expect(balance.balance == Money(dollars: 10) - charges.reduce(Money.zero) { $0 + $1.amount })
            #expect(try await node.ledger.verify().isConsistent)
        }
    }
}

/// What a node does while its ledger is unreachable: serve what its leases cover, spool the
/// charges, refuse what it cannot prove, and replay once the ledger is back.
@Suite struct LedgerOutageTests {
    @Test func aNodeServesFromItsLeaseSpoolsTheChargesAndRefusesWhatItCannotProve() async throws {
        try await TestNode.with(cuttable: true) { node in
            let ledger = try #require(node.ledger as? UnreachableLedger)
            let stranger = APIKeyFormat.generate()
            try await ledger.createAccount(id: "other", name: "Other")
            try await ledger.post([TransferRequest(idempotencyKey: "grant-other", debit: Billing.SystemAccount.grants, credit: "other",
                                                   amount: Money(dollars: 10), kind: .grant)])
            try await ledger.insertKey(KeyRecord(id: "key-2", accountID: "other", hash: APIKeyFormat.hash(stranger),
                                                 label: APIKeyFormat.label(stranger), name: "other"))
            #expect(try await node.chat().status == 200)  // the node now holds a lease on the account
            #expect(try await node.request("/readyz", method: .GET).json?["status"] == "ready")

            ledger.isDown = true
            var served: [String] = []
            for stream in [false, true] {
                let reply = try await node.chat(stream: stream)
                #expect(reply.status == 200)
                served.append(try #require(reply.header("X-Generation-Id")))
            }
            let ready = try await node.request("/readyz", method: .GET)
            #expect(ready.status == 200)
            #expect(ready.json?["status"] == "degraded" && ready.json?["ledger"] == "unreachable")
            #expect(ready.json?["spooled_settlements"] == 2)
            // No lease and a key this node has never seen: it cannot prove anything.
            let refused = try await node.chat(key: stranger)
            #expect(refused.status == 503)
            #expect(refused.json?["error"]?["metadata"]?["reason"] == "ledger_unavailable")

            ledger.isDown = false
            var replayed = false
            for _ in 0..<60 where !replayed {
                try await Task.sleep(for: .milliseconds(100))
                replayed = try await node.request("/readyz", method: .GET).json?["spooled_settlements"] == 0
            }
            #expect(replayed)
            var cost = Money.zero
            for id in served { cost += try #require(try await node.generation(id)).cost }
            let charges = try await ledger.entries(EntryQuery(account: node.account, kind: .charge))
            #expect(charges.count == 3)
            #expect(Set(charges.compactMap(\.transfer.generationID)).isSuperset(of: served))
            let balance = try await node.settledBalance()
            #expect(balance.available == balance.balance)
            #expect(balance.balance == Money(dollars: 10) - charges.reduce(Money.zero) { $0 + $1.transfer.amount })
            #expect(try await ledger.verify().isConsistent)
        }
    }
}
