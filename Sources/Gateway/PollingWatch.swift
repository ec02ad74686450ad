import NIOConcurrencyHelpers

/// Many request timers on one: each registration's tick runs every `interval` on a single
/// polling task, which runs only while something is registered. It serves each attempt's
/// watchdog and client-gone check and each stream's processing comments.
///
/// Why not a `Task.sleep` per request: a cancelled sleep gives its caller back at once but keeps
/// its timer until the deadline. A watchdog sleeping a quarter of a 30 s stall window per request
/// left ~18,000 timers pending at 2,400 requests/s, each firing later for nothing — about a
/// tenth of the node's CPU, and load that went on for seconds after the traffic stopped. Here a
/// registration costs a dictionary entry, and a finished request removes it.
final class PollingWatch: Sendable {
    private struct State {
        /// Each registration's tick: true to be called again.
        var ticks: [UInt64: @Sendable () -> Bool] = [:]
        var nextID: UInt64 = 0
        var polling = false
    }

    let interval: Duration
    private let state = NIOLockedValueBox(State())

    init(every interval: Duration) {
        self.interval = interval
    }

    /// Calls `tick` every `interval` until it returns false or `cancel(_:)` is called with the
    /// returned registration: periodic work for a request without a task of its own.
    func every(_ tick: @escaping @Sendable () -> Bool) -> Registration {
        let (id, startPolling) = state.withLockedValue { state in
            state.nextID &+= 1
            state.ticks[state.nextID] = tick
            defer { state.polling = true }
            return (state.nextID, !state.polling)
        }
        // Detached: the poll outlives the request that started it, and must not carry its context.
        if startPolling { Task.detached { await self.poll() } }
        return Registration(id: id)
    }

    /// Ends a registration made by `every(_:)`; calling it again, or after the tick stopped, does nothing.
    func cancel(_ registration: Registration) {
        _ = state.withLockedValue { $0.ticks.removeValue(forKey: registration.id) }
    }

    /// What `every(_:)` registered.
    struct Registration: Sendable {
        fileprivate let id: UInt64
    }

    /// Registrations now (for tests and metrics).
    var waiting: Int { state.withLockedValue { $0.ticks.count } }

    /// Whether the polling task runs (it stops when nothing is registered).
    var isPolling: Bool { state.withLockedValue { $0.polling } }

    private func poll() async {
        while true {
            try? await Task.sleep(for: interval)
            let ticks = state.withLockedValue { state -> [(key: UInt64, value: @Sendable () -> Bool)]? in
                guard !state.ticks.isEmpty else {
                    state.polling = false
                    return nil
                }
                return Array(state.ticks)
            }
            guard let ticks else { return }
            // Ticks run outside the lock: they take locks of their own.
            for (id, tick) in ticks where !tick() {
                _ = state.withLockedValue { $0.ticks.removeValue(forKey: id) }
            }
        }
    }
}
