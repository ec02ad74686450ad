import Testing
@testable import SignalboxCore

/// The failover rules alone: which failures move on to the next endpoint, and which end the request.
@Suite struct FailoverQueueTests {
    /// Three endpoints of one model with contexts of 8k, 32k and 128k tokens.
    static func attempts() throws -> [PlannedAttempt] {
        let planned = try RoutingPlanner(catalog: Fixture.catalog, loadBalancing: .catalogOrder).plan(Fixture.request())
        return zip(planned.prefix(3), [8_000, 32_000, 128_000]).map { attempt, context in
            var attempt = attempt
            attempt.endpoint.contextLength = context
            return attempt
        }
    }

    @Test func aProviderFailureMovesOnUntilNothingIsLeft() throws {
        var queue = FailoverQueue(try Self.attempts())
        let first = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: true), of: first) == .tryNext)
        let second = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: true), of: second) == .tryNext)
        let third = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: true), of: third) == .stop)
        #expect(queue.next() == nil)
    }

    @Test func theClientsOwnErrorAndOutputAlreadyDeliveredAreFinal() throws {
        var queue = FailoverQueue(try Self.attempts())
        let first = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: false), of: first) == .stop)
        var streaming = FailoverQueue(try Self.attempts())
        let attempt = try #require(streaming.next() as PlannedAttempt?)
        #expect(streaming.after(.init(retryable: true, deliveredToClient: true), of: attempt) == .stop)
    }

    @Test func aPromptTooLongMovesOnlyToLargerContexts() throws {
        var attempts = try Self.attempts()
        attempts.swapAt(0, 1)  // 32k first, then 8k, then 128k
        var queue = FailoverQueue(attempts)
        let first = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: false, contextTooLong: true), of: first) == .tryNext)
        #expect(queue.pending.map(\.endpoint.contextLength) == [128_000])
        let last = try #require(queue.next() as PlannedAttempt?)
        #expect(queue.after(.init(retryable: false, contextTooLong: true), of: last) == .stop)
    }
}
