import Foundation
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// How a node drains on SIGTERM: how long it keeps accepting connections with `/readyz` at 503
/// (so balancers probing it stop sending), and how long in-flight requests then get to finish.
public struct DrainSettings: Sendable {
    /// Readiness is 503 and the listener still accepts for this long.
    public var delay: Duration = .seconds(10)
    /// Once the listener closed, requests still in flight get this long before they are cut.
    public var timeout: Duration = .seconds(60)

    public init(delay: Duration = .seconds(10), timeout: Duration = .seconds(60)) {
        self.delay = delay
        self.timeout = timeout
    }
}

/// Cuts a drain delay short: an operator's Ctrl-C (SIGINT) wants the node to stop now, while a
/// SIGTERM from an orchestrator waits out the delay for the balancers.
public final class DrainDelayGate: Sendable {
    private let skipped = NIOLockedValueBox(false)

    public init() {}

    /// Ends the current delay (and any later one) within 50 ms.
    public func skip() { skipped.withLockedValue { $0 = true } }

    /// Waits for `delay`, or until `skip()`, or until the task is cancelled. It looks every 50 ms
    /// rather than parking a continuation: nothing can be left waiting whatever the order of a
    /// skip, a cancellation and the wait's start.
    func wait(_ delay: Duration) async {
        let end = ContinuousClock.now + delay
        while ContinuousClock.now < end, !Task.isCancelled, !skipped.withLockedValue({ $0 }) {
            try? await Task.sleep(for: min(.milliseconds(50), end - ContinuousClock.now))
        }
    }
}

/// The first service to hear of a graceful shutdown (SIGTERM): it turns readiness off, tells
/// the cluster the node is leaving, and holds the shutdown of the services started before it —
/// the HTTP listener among them — for the drain delay, so balancers probing `/readyz` see 503
/// (not a refused connection) and stop sending before the listener closes.
public struct DrainOnShutdownService: Service {
    let readiness: Readiness
    let delay: Duration
    let gate: DrainDelayGate
    let logger: Logger
    let onDrain: @Sendable () async -> Void

    /// `onDrain` runs once readiness is off (a cluster node announces it is leaving).
    public init(
        readiness: Readiness, delay: Duration = .zero, gate: DrainDelayGate = DrainDelayGate(),
        logger: Logger = Logger(label: "signalbox.drain"), onDrain: @escaping @Sendable () async -> Void = {}
    ) {
        self.readiness = readiness
        self.delay = delay
        self.gate = gate
        self.logger = logger
        self.onDrain = onDrain
    }

    public func run() async throws {
        try? await gracefulShutdown()
        readiness.set(false)
        // Cancelled (the group failed, e.g. the port was taken) rather than shut down: no drain.
        guard !Task.isCancelled else { return }
        await onDrain()
        guard delay > .zero else { return }
        logger.notice("draining: /readyz answers 503; the listener closes after the drain delay", metadata: ["delay": "\(delay)"])
        await gate.wait(delay)
    }
}

/// Runs a service (the HTTP server) and, once a graceful shutdown reaches it, gives it `timeout`
/// to finish what is in flight before cancelling it: a stream that outlives the drain timeout is
/// cut (and settled as a cancelled request), so a node always stops.
public struct BoundedShutdownService: Service {
    let service: any Service
    let timeout: Duration
    let logger: Logger

    public init(_ service: any Service, timeout: Duration, logger: Logger) {
        self.service = service
        self.timeout = timeout
        self.logger = logger
    }

    public func run() async throws {
        let (service, timeout, logger) = (self.service, self.timeout, self.logger)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await service.run()
                return true
            }
            group.addTask {
                try await gracefulShutdown()
                try await Task.sleep(for: timeout)
                return false
            }
            // The first to end decides: the service finished (stop the timer), or the timer ran
            // out (cancel the service); a timer cancelled because the service ended is ignored.
            while let finished = try await group.next() {
                if finished { break }
                logger.warning("drain timeout reached: requests still in flight are cut", metadata: ["timeout": "\(timeout)"])
                break
            }
            group.cancelAll()
        }
    }
}
