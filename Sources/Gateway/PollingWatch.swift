import NIOConcurrencyHelpers

/// Many request timers on one: each registration's check runs every `interval` on a single
/// polling task, which runs only while something is registered. It serves each attempt's
/// watchdog and client-gone check (`run(_:cancellingWhen:)`) and each stream's processing
/// comments (`every(_:)`).
///
/// Why not a `Task.sleep` per request: a cancelled sleep gives its caller back at once but keeps
/// its timer until the deadline. A watchdog sleeping a quarter of a 30 s stall window per request
/// left ~18,000 timers pending at 2,400 requests/s, each firing later for nothing — about a
/// tenth of the node's CPU, and load that went on for seconds after the traffic stopped. Here a
/// registration costs a dictionary entry, and a finished request removes it.
final class PollingWatch: Sendable {
    /// Evaluates a registration; when it is done, returns what to run after it is removed.
    private typealias Check = @Sendable () -> (@Sendable () -> Void)?

    private struct State {
        var checks: [UInt64: Check] = [:]
        var nextID: UInt64 = 0
        var polling = false
    }

    let interval: Duration
    private let state = NIOLockedValueBox(State())

    init(every interval: Duration) {
        self.interval = interval
    }

    /// Runs `operation` in a task of its own and returns its result; the task is cancelled when
    /// `stop` (checked every `interval`, so up to one interval late) returns true, or when the
    /// calling task is cancelled. One task and a dictionary entry, where racing the work against
    /// a waiting task costs a task group and two child tasks, each keeping its frames for as long
    /// as the work runs.
    func run<Value: Sendable>(
        _ operation: @escaping @Sendable () async throws -> Value, cancellingWhen stop: @escaping @Sendable () -> Bool
    ) async throws -> Value {
        let task = Task { try await operation() }
        let id = register {
            guard stop() else { return nil }
            return { task.cancel() }
        }
        defer { remove(id) }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }

    /// Calls `tick` every `interval` until it returns false or `cancel(_:)` is called with the
    /// returned registration: periodic work for a request without a task of its own.
    func every(_ tick: @escaping @Sendable () -> Bool) -> Registration {
        Registration(
            id: register {
                guard !tick() else { return nil }
                return {}
            })
    }

    /// Ends a registration made by `every(_:)`; calling it again, or after the tick stopped, does nothing.
    func cancel(_ registration: Registration) {
        remove(registration.id)
    }

    /// What `every(_:)` registered.
    struct Registration: Sendable {
        fileprivate let id: UInt64
    }

    /// Registrations now (for tests and metrics).
    var waiting: Int { state.withLockedValue { $0.checks.count } }

    /// Whether the polling task runs (it stops when nothing is registered).
    var isPolling: Bool { state.withLockedValue { $0.polling } }

    private func register(_ check: @escaping Check) -> UInt64 {
        let (id, startPolling) = state.withLockedValue { state in
            state.nextID &+= 1
            state.checks[state.nextID] = check
            defer { state.polling = true }
            return (state.nextID, !state.polling)
        }
        if startPolling { Task { await self.poll() } }
        return id
    }

    /// Removes a registration; true when it was still there (whoever removes it acts on it, once).
    @discardableResult
    private func remove(_ id: UInt64) -> Bool {
        state.withLockedValue { $0.checks.removeValue(forKey: id) } != nil
    }

    private func poll() async {
        while true {
            try? await Task.sleep(for: interval)
            let checks = state.withLockedValue { state -> [(key: UInt64, value: Check)]? in
                guard !state.checks.isEmpty else {
                    state.polling = false
                    return nil
                }
                return Array(state.checks)
            }
            guard let checks else { return }
            // Checks run outside the lock: they take locks of their own.
            for (id, check) in checks {
                guard let then = check(), remove(id) else { continue }
                then()
            }
        }
    }
}
