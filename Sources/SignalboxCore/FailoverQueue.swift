/// The attempts a request may still make, and whether a failed one moves on to the next: the
/// failover rules, pure, so each is unit tested like the planner's.
///
/// - A failure after output reached a streaming client is final: the client already has part
///   of an answer, and another endpoint would start a different one.
/// - A prompt too long for the endpoint's context moves on only to endpoints with a larger
///   context (nothing else could take it).
/// - Otherwise a failure moves on when it is the provider's (retryable: transport trouble,
///   timeouts, rate limits, server errors) and attempts remain; the client's own error (a plain
///   400) would fail anywhere, so it is final.
public struct FailoverQueue: Sendable {
    /// What happens after a failed attempt.
    public enum Verdict: Sendable, Hashable {
        case tryNext
        case stop
    }

    /// How an attempt failed, in the terms failover needs.
    public struct Failure: Sendable, Hashable {
        /// The provider's fault, worth another endpoint.
        public var retryable: Bool
        /// The prompt does not fit the endpoint's context.
        public var contextTooLong: Bool
        /// Output already reached a streaming client.
        public var deliveredToClient: Bool

        public init(retryable: Bool, contextTooLong: Bool = false, deliveredToClient: Bool = false) {
            self.retryable = retryable
            self.contextTooLong = contextTooLong
            self.deliveredToClient = deliveredToClient
        }
    }

    private var remaining: ArraySlice<PlannedAttempt>

    public init(_ attempts: [PlannedAttempt]) {
        remaining = attempts[...]
    }

    /// The attempts not made yet, in order.
    public var pending: [PlannedAttempt] { Array(remaining) }

    /// The next attempt to make, nil when none is left.
    public mutating func next() -> PlannedAttempt? {
        remaining.popFirst()
    }

    /// After `attempt` failed: whether to make the next attempt.
    public mutating func after(_ failure: Failure, of attempt: PlannedAttempt) -> Verdict {
        if failure.contextTooLong {
            remaining = remaining.filter { $0.endpoint.contextLength > attempt.endpoint.contextLength }[...]
        }
        let movesOn = failure.retryable || (failure.contextTooLong && !remaining.isEmpty)
        return failure.deliveredToClient || !movesOn || remaining.isEmpty ? .stop : .tryNext
    }
}
