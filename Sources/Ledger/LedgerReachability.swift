import NIOConcurrencyHelpers

/// Whether this node's ledger answers, shared by everything on the node that calls it.
///
/// Once an outage is noticed (a write or read failed or timed out), the request path stops
/// waiting on the ledger: settlements go straight to the spool, key lookups use what the node
/// saw last, and requests its leases do not cover are refused at once. The committer's recovery
/// loop probes the ledger and turns this back on.
public final class LedgerReachability: Sendable {
    private let state = NIOLockedValueBox(true)
    private let backlog = NIOLockedValueBox(false)

    public init() {}

    public var isReachable: Bool { state.withLockedValue { $0 } }

    public func set(_ reachable: Bool) { state.withLockedValue { $0 = reachable } }

    /// Settlements have waited outside the ledger longer than the node allows (its spool's
    /// oldest record is older than the maximum spool age, or the spool cannot be written): the
    /// node refuses new paid requests until they are committed.
    public var isBacklogged: Bool { backlog.withLockedValue { $0 } }

    public func setBacklogged(_ backlogged: Bool) { backlog.withLockedValue { $0 = backlogged } }
}
