import NIOConcurrencyHelpers

/// Many waits on one timer: each `wait(until:)` suspends until its condition yields a value —
/// checked every `interval` by a single polling task that runs only while someone waits — or
/// until the waiting task is cancelled.
///
/// Why not a `Task.sleep` per wait: a cancelled sleep gives its caller back at once but keeps its
/// timer until the deadline. A watchdog sleeping a quarter of a 30 s stall window per request
/// left ~18,000 timers pending at 2,400 requests/s, each firing later for nothing — about a
/// tenth of the node's CPU, and load that went on for seconds after the traffic stopped. Here a
/// wait costs a dictionary entry, and a finished request removes it.
final class PollingWatch: Sendable {
    private struct Waiter: Sendable {
        /// Evaluates the condition; when it holds, returns what resumes the waiter with it.
        let check: @Sendable () -> (@Sendable () -> Void)?
        let cancel: @Sendable () -> Void
    }

    private struct State {
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        var polling = false
    }

    let interval: Duration
    private let state = NIOLockedValueBox(State())

    init(every interval: Duration) {
        self.interval = interval
    }

    /// Waits until `condition` returns a value (checked every `interval`, so up to one interval
    /// late), or throws `CancellationError` when the task is cancelled first.
    func wait<Value: Sendable>(until condition: @escaping @Sendable () -> Value?) async throws -> Value {
        let id = state.withLockedValue { state in
            state.nextID &+= 1
            return state.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                let waiter = Waiter(
                    check: {
                        guard let value = condition() else { return nil }
                        return { continuation.resume(returning: value) }
                    },
                    cancel: { continuation.resume(throwing: CancellationError()) })
                let startPolling = state.withLockedValue { state in
                    state.waiters[id] = waiter
                    defer { state.polling = true }
                    return !state.polling
                }
                if startPolling { Task { await self.poll() } }
                // Cancelled before the waiter was registered: the handler found nothing to cancel.
                if Task.isCancelled { remove(id)?.cancel() }
            }
        } onCancel: {
            remove(id)?.cancel()
        }
    }

    /// Waits registered now (for tests and metrics).
    var waiting: Int { state.withLockedValue { $0.waiters.count } }

    /// Whether the polling task runs (it stops when nobody waits).
    var isPolling: Bool { state.withLockedValue { $0.polling } }

    /// Whoever removes a waiter resumes it, so it is resumed exactly once.
    private func remove(_ id: UInt64) -> Waiter? {
        state.withLockedValue { $0.waiters.removeValue(forKey: id) }
    }

    private func poll() async {
        while true {
            try? await Task.sleep(for: interval)
            let waiters = state.withLockedValue { state -> [(key: UInt64, value: Waiter)]? in
                guard !state.waiters.isEmpty else {
                    state.polling = false
                    return nil
                }
                return Array(state.waiters)
            }
            guard let waiters else { return }
            // Conditions run outside the lock: they take locks of their own.
            for (id, waiter) in waiters {
                guard let resume = waiter.check(), remove(id) != nil else { continue }
                resume()
            }
        }
    }
}
