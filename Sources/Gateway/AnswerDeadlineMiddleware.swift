import Hummingbird

/// Answers 503 `ledger_unavailable` when a route has not produced its response within `timeout`,
/// cancelling the work (a query waiting for a connection the pool can't make gives up).
///
/// For the admin and account routes, which read the ledger directly: during a PostgreSQL outage
/// they would otherwise wait for as long as the outage lasts. Model requests have their own
/// answer to an unreachable ledger (leases, the settlement spool) and are not under it.
struct AnswerDeadlineMiddleware<Context: RequestContext>: RouterMiddleware {
    let timeout: Duration

    private struct Expired: Error {}

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            // The group ends only once both tasks have, so `next` never outlives this call.
            return try await withoutActuallyEscaping(next) { next in
                nonisolated(unsafe) let next = next
                return try await withThrowingTaskGroup(of: Response.self) { group in
                    group.addTask { try await next(request, context) }
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        throw Expired()
                    }
                    defer { group.cancelAll() }
                    return try await group.next()!
                }
            }
        } catch is Expired {
            throw APIError(
                status: 503,
                message: "The credit ledger did not answer within \(timeout.components.seconds) s, so this request could not be "
                    + "completed; nothing was changed by it unless a later read shows otherwise. Retry once the ledger is back "
                    + "(/readyz reports it).",
                metadata: ["reason": "ledger_unavailable", "error_type": "ledger_unavailable"], headers: [("Retry-After", "5")])
        }
    }
}
