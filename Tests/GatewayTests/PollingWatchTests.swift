import Foundation
@testable import Gateway
import NIOConcurrencyHelpers
import Testing

/// The shared timer behind every request's watchdog and client-gone check: a wait ends when its
/// condition holds or its task is cancelled, and a finished wait leaves nothing behind.
@Suite struct PollingWatchTests {
    @Test func aWaitEndsWithTheValueOnceItsConditionHolds() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let ready = NIOLockedValueBox<String?>(nil)
        async let value = watch.wait { ready.withLockedValue { $0 } }
        try await Task.sleep(for: .milliseconds(30))
        #expect(watch.waiting == 1)
        ready.withLockedValue { $0 = "overdue" }
        #expect(try await value == "overdue")
        #expect(watch.waiting == 0)
    }

    @Test func cancelledWaitsEndAtOnceAndLeaveNoEntryOrTimerBehind() async throws {
        let watch = PollingWatch(every: .seconds(3600))  // a wait could only end by cancellation
        let started = ContinuousClock.now
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<10_000 {
                group.addTask {
                    do {
                        _ = try await watch.wait { () -> Int? in nil }
                        return false
                    } catch {
                        return error is CancellationError
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
            group.cancelAll()
            for await cancelled in group { #expect(cancelled) }
        }
        #expect(ContinuousClock.now - started < .seconds(30))
        #expect(watch.waiting == 0)
    }

    @Test func aWaitInAnAlreadyCancelledTaskThrowsWithoutWaiting() async throws {
        let watch = PollingWatch(every: .seconds(3600))
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await watch.wait { () -> Int? in nil }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(watch.waiting == 0)
    }

    @Test func thePollingTaskStopsWhenNobodyWaitsAndStartsAgainForTheNext() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        #expect(try await watch.wait { 1 } == 1)
        try await Task.sleep(for: .milliseconds(50))
        #expect(!watch.isPolling)
        #expect(try await watch.wait { 2 } == 2)
    }
}
