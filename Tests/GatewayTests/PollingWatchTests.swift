import Foundation
@testable import Gateway
import NIOConcurrencyHelpers
import Testing

/// The shared timer behind every request's watchdog, client-gone check and processing comments:
/// a tick runs every interval until it says stop or is cancelled, and nothing is left behind.
@Suite struct PollingWatchTests {
    @Test func aTickRunsEveryIntervalUntilItSaysStop() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let ticks = NIOLockedValueBox(0)
        _ = watch.every {
            ticks.withLockedValue {
                $0 += 1
                return $0 < 3
            }
        }
        #expect(watch.waiting == 1)
        try await Self.within { watch.waiting == 0 }
        try await Task.sleep(for: .milliseconds(30))
        #expect(ticks.withLockedValue { $0 } == 3)
    }

    @Test func aCancelledTickIsNeverCalledAgain() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        let ticks = NIOLockedValueBox(0)
        let registration = watch.every {
            ticks.withLockedValue { $0 += 1 }
            return true
        }
        try await Self.within { ticks.withLockedValue { $0 } >= 2 }
        watch.cancel(registration)
        let after = ticks.withLockedValue { $0 }
        try await Task.sleep(for: .milliseconds(50))
        #expect(ticks.withLockedValue { $0 } <= after + 1)  // at most one already under way
        #expect(watch.waiting == 0)
        watch.cancel(registration)  // a second cancel does nothing
    }

    @Test func tenThousandCancelledRegistrationsLeaveNoEntryOrTimerBehind() async throws {
        let watch = PollingWatch(every: .seconds(3600))
        let registrations = (0..<10_000).map { _ in watch.every { true } }
        #expect(watch.waiting == 10_000)
        for registration in registrations { watch.cancel(registration) }
        #expect(watch.waiting == 0)
    }

    @Test func thePollingTaskStopsWhenNothingIsRegisteredAndStartsAgainForTheNext() async throws {
        let watch = PollingWatch(every: .milliseconds(5))
        _ = watch.every { false }
        try await Self.within { watch.waiting == 0 }
        try await Self.within { !watch.isPolling }
        // Only a restarted poll can call this tick.
        let called = NIOLockedValueBox(false)
        _ = watch.every {
            called.withLockedValue { $0 = true }
            return false
        }
        try await Self.within { called.withLockedValue { $0 } }
    }

    /// Waits up to 30 s for `condition` (generous: the poll runs on the cooperative threads the
    /// other suites share), then records it as failed.
    static func within(_ condition: () -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while !condition() && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        #expect(condition(), sourceLocation: sourceLocation)
    }
}
