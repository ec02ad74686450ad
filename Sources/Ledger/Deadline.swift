import NIOConcurrencyHelpers

/// Runs `operation`, but gives up after `timeout` with `LedgerError.unreachable`.
///
/// Unlike a task group, this does not wait for an operation that ignores cancellation (a
/// query queued on a pool whose database is down): the caller gets its answer on time, and the
/// abandoned operation finishes or fails on its own. Ledger writes are idempotent, so one that
/// lands after its deadline is harmless when it is replayed.
public func withLedgerDeadline<T: Sendable>(
    _ timeout: Duration, _ what: String, operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let pending = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    let timer = NIOLockedValueBox<Task<Void, Never>?>(nil)
    @Sendable func finish(_ result: Result<T, any Error>) {
        guard
            let continuation = pending.withLockedValue({ current -> CheckedContinuation<T, any Error>? in
                defer { current = nil }
                return current
            })
        else { return }
        continuation.resume(with: result)
    }
    return try await withCheckedThrowingContinuation { continuation in
        pending.withLockedValue { $0 = continuation }
        let work = Task {
            do { finish(.success(try await operation())) } catch { finish(.failure(error)) }
            timer.withLockedValue { $0?.cancel() }
        }
        timer.withLockedValue {
            $0 = Task {
                guard (try? await Task.sleep(for: timeout)) != nil else { return }
                work.cancel()
                finish(.failure(LedgerError.unreachable("\(what) did not finish within \(timeout)")))
            }
        }
    }
}
