import Foundation
import PropertyBased
import SignalboxCore
import Testing
@testable import Providers

/// Random valid OpenAI conversations must translate into requests that each upstream's own
/// rules accept.
@Suite struct TranslationPropertyTests {
    /// One OpenAI message (or, for kind 4, an assistant tool call plus its results) per code.
    static func conversation(_ codes: [Int]) -> JSONValue {
        var messages: [JSONValue] = []
        for (index, code) in codes.enumerated() {
            switch code {
            case 0: messages.append(["role": "system", "content": .string("System rule \(index)")])
            case 1: messages.append(["role": "user", "content": .string("Question \(index)")])
            case 2:
                messages.append([
                    "role": "user",
                    "content": [
                        ["type": "text", "text": .string("Look \(index)")],
                        ["type": "image_url", "image_url": ["url": "data:image/png;base64,iVBORw0K"]],
                        ["type": "text", "text": ""],
                    ],
                ])
            case 3: messages.append(["role": "assistant", "content": .string("Answer \(index)")])
            case 4:
                let calls = (0...(index % 2)).map { call -> JSONValue in
                    [
                        "id": .string("call.\(index).\(call)"), "type": "function",
                        "function": ["name": .string("tool_\(call)"), "arguments": .string(call == 0 ? #"{"q": \#(index)}"# : "")],
                    ]
                }
                messages.append(["role": "assistant", "content": "", "tool_calls": .array(calls)])
                for call in calls {
                    messages.append(["role": "tool", "tool_call_id": call["id"]!, "content": .string("result \(index)")])
                }
            case 5: messages.append(["role": "developer", "content": [["type": "text", "text": .string("Dev note \(index)")]]])
            default: messages.append(["role": "assistant", "content": nil])
            }
        }
        return ["model": "a/m", "temperature": 1.6, "stop": "END", "messages": .array(messages)]
    }

    static let codes = Gen.int(in: 0...6).array(of: 1...14)

    /// How many generated conversations `ChatRequest` accepted (only those are translated), so a
    /// generator that stops producing valid requests fails the test instead of passing it empty.
    final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var counts = (accepted: 0, rejected: 0)
        func count(_ request: ChatRequest?) -> ChatRequest? {
            lock.withLock { if request == nil { counts.rejected += 1 } else { counts.accepted += 1 } }
            return request
        }
        var accepted: Int { lock.withLock { counts.accepted } }
        var rejected: Int { lock.withLock { counts.rejected } }
    }

    @Test func anthropicRequestsFollowTheMessagesRules() async throws {
        let tally = Tally()
        await propertyCheck(count: 300, input: Self.codes) { codes in
            guard let chat = tally.count(try? ChatRequest(json: Self.conversation(codes))) else { return }
            let request = AnthropicAdapter().makeRequest(
                chat, attempt: attempt(format: .anthropic, upstream: "c", maxOutput: 4096), apiKey: "k")
            guard let body = try? JSONParser.parse(request.body.readableBytesView), let messages = body["messages"]?.arrayValue else {
                Issue.record("not JSON")
                return
            }
            #expect(!messages.isEmpty)
            #expect(messages.first?["role"] == "user")
            for (previous, next) in zip(messages, messages.dropFirst()) {
                #expect(previous["role"] != next["role"], "roles must alternate")
            }
            let max = body["max_tokens"]?.intValue ?? 0
            #expect(max >= 1 && max <= 4096)
            #expect((body["temperature"]?.numericValue ?? 0) <= 1)
            for (index, message) in messages.enumerated() {
                #expect(["user", "assistant"].contains(message["role"]?.stringValue ?? ""))
                let blocks = message["content"]?.arrayValue ?? []
                #expect(!blocks.isEmpty)
                for block in blocks where block["type"] == "text" {
                    #expect(block["text"]?.stringValue?.isEmpty == false, "empty text blocks are rejected")
                }
                let toolUses = blocks.filter { $0["type"] == "tool_use" }
                guard !toolUses.isEmpty else { continue }
                // every tool_use is answered, first thing, in the next user message
                let reply = index + 1 < messages.count ? messages[index + 1]["content"]?.arrayValue ?? [] : []
                let results = reply.prefix { $0["type"] == "tool_result" }.compactMap { $0["tool_use_id"]?.stringValue }
                for use in toolUses {
                    let id = use["id"]?.stringValue ?? ""
                    #expect(results.contains(id), "tool_use \(id) has no tool_result right after it")
                    #expect(id.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" })
                    #expect(use["input"]?.objectValue != nil)
                }
            }
        }
        // Most generated conversations are valid requests; only those say anything here.
        print("\(#function): \(tally.accepted) conversations translated, \(tally.rejected) refused by ChatRequest")
        #expect(tally.accepted >= 150, "only \(tally.accepted) of \(tally.accepted + tally.rejected) generated conversations were valid")
    }

    @Test func geminiRequestsFollowTheContentsRules() async throws {
        let tally = Tally()
        await propertyCheck(count: 300, input: Self.codes) { codes in
            guard let chat = tally.count(try? ChatRequest(json: Self.conversation(codes))) else { return }
            let request = GeminiAdapter().makeRequest(chat, attempt: attempt(format: .gemini, upstream: "g"), apiKey: "k")
            guard let body = try? JSONParser.parse(request.body.readableBytesView), let contents = body["contents"]?.arrayValue else {
                Issue.record("not JSON")
                return
            }
            #expect(!contents.isEmpty)
            for (previous, next) in zip(contents, contents.dropFirst()) {
                #expect(previous["role"] != next["role"], "roles must alternate")
            }
            for (index, content) in contents.enumerated() {
                #expect(["user", "model"].contains(content["role"]?.stringValue ?? ""))
                let parts = content["parts"]?.arrayValue ?? []
                #expect(!parts.isEmpty)
                for part in parts {
                    #expect(part.objectValue?.keys.filter { $0 != "thought" }.count == 1, "one data field per part")
                    if let text = part["text"] { #expect(text.stringValue?.isEmpty == false) }
                }
                let calls = parts.compactMap { $0["functionCall"]?["name"]?.stringValue }
                guard !calls.isEmpty else { continue }
                let next = index + 1 < contents.count ? contents[index + 1]["parts"]?.arrayValue ?? [] : []
                let answered = next.compactMap { $0["functionResponse"]?["name"]?.stringValue }
                #expect(answered.sorted() == calls.sorted(), "each functionCall is answered in the next turn")
                #expect(next.allSatisfy { $0["functionResponse"]?["response"]?.objectValue != nil || $0["functionResponse"] == nil })
            }
        }
        // Most generated conversations are valid requests; only those say anything here.
        print("\(#function): \(tally.accepted) conversations translated, \(tally.rejected) refused by ChatRequest")
        #expect(tally.accepted >= 150, "only \(tally.accepted) of \(tally.accepted + tally.rejected) generated conversations were valid")
    }
}
