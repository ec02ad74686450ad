import Foundation
@testable import Gateway
import NIOConcurrencyHelpers
import Testing

/// The shared timer behind every request's watchdog, client-gone check and processing comments:
/// work ends when its condition holds or its caller is cancelled, and nothing is left behind.
@Suite struct PollingWatchTests {
    @Test func cancelledRunsEndAtOnceAndLeaveNoEntryOrTimerBehind() async throws {
        let watch = PollingWatch(every: .seconds(3600))  // the work could only end by cancellation
        let started = ContinuousClock.now
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<10_000 {
                group.addTask {
                    do {
                        try await watch.run({ try await Task.sleep(for: .seconds(3600)) }, cancellingWhen: { false })
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

    @Test func aRunInAnAlreadyCancelledTaskCancelsItsWorkAtOnce() async throws {
        let watch = PollingWatch(every: .seconds(3600))
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await watch.run({ try await Task.sleep(for: .seconds(3600)) }, cancellingWhen: { false })
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(watch.waiting == 0)
    }

    @Test func thePollingTaskStopsWhenNothingIsRegisteredAndStartsAgainForTheNext() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let stopAtOnce = watch.every { false }
        while watch.waiting > 0 { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(!watch.isPolling)
        watch.cancel(stopAtOnce)
        // A run that needs the timer gets it back: only the restarted poll can cancel this work.
        let overdue = NIOLockedValueBox(false)
        async let cancelled: Bool = {
            do {
                try await watch.run({ try await Task.sleep(for: .seconds(3600)) }, cancellingWhen: { overdue.withLockedValue { $0 } })
                return false
            } catch { return error is CancellationError }
        }()
        overdue.withLockedValue { $0 = true }
        #expect(await cancelled)
    }

    @Test func runReturnsTheWorksResultAndLeavesNoEntryBehind() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let value = try await watch.run({ 42 }, cancellingWhen: { false })
        #expect(value == 42)
        #expect(watch.waiting == 0)
    }

    @Test func runCancelsTheWorkOnceItsConditionHolds() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let overdue = NIOLockedValueBox(false)
        let started = ContinuousClock.now
        async let outcome: Bool = {
            do {
                try await watch.run({ try await Task.sleep(for: .seconds(3600)) }, cancellingWhen: { overdue.withLockedValue { $0 } })
                return false
            } catch {
                return error is CancellationError
            }
        }()
        try await Task.sleep(for: .milliseconds(30))
        #expect(watch.waiting == 1)
        overdue.withLockedValue { $0 = true }
        #expect(await outcome)
        #expect(ContinuousClock.now - started < .seconds(60))
        #expect(watch.waiting == 0)
    }

    @Test func cancellingTheCallerCancelsTheWork() async throws {
        let watch = PollingWatch(every: .seconds(3600))
        let workCancelled = NIOLockedValueBox(false)
        let caller = Task {
            try await watch.run(
                {
                    do { try await Task.sleep(for: .seconds(3600)) } catch { workCancelled.withLockedValue { $0 = true } }
                }, cancellingWhen: { false })
        }
        try await Task.sleep(for: .milliseconds(30))
        caller.cancel()
        _ = await caller.result
        #expect(workCancelled.withLockedValue { $0 })
        #expect(watch.waiting == 0)
    }

    @Test func aTickRunsEveryIntervalUntilItSaysStopOrIsCancelled() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let ticks = NIOLockedValueBox(0)
        _ = watch.every {
            ticks.withLockedValue {
                $0 += 1
                return $0 < 3
            }
        }
        let cancelled = watch.every { true }
        #expect(watch.waiting == 2)
        watch.cancel(cancelled)
        while watch.waiting > 0 { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(30))
        #expect(ticks.withLockedValue { $0 } == 3)
        watch.cancel(cancelled)  // a second cancel does nothing
    }
}
