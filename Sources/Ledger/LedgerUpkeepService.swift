import Logging
import ServiceLifecycle

/// Keeps the ledger side of a node in order: renews the node's leases and gives idle ones back
/// (every second), voids leases whose node died (`expireLeases`, every 30 s), and at
/// shutdown — after the HTTP server has finished its in-flight requests — commits what is queued
/// and gives every lease back. List it before the HTTP server in the service group so it stops after it.
public struct LedgerUpkeepService: Service {
    let ledger: any SettlementStore
    let credit: CreditLeases
    let expiryInterval: Duration
    let leaseInterval: Duration
    let logger: Logger

    public init(
        ledger: any SettlementStore, credit: CreditLeases, expiryInterval: Duration = .seconds(30),
        leaseInterval: Duration = .seconds(1), logger: Logger
    ) {
        self.ledger = ledger
        self.credit = credit
        self.expiryInterval = expiryInterval
        self.leaseInterval = leaseInterval
        self.logger = logger
    }

    public func run() async throws {
        await credit.committer.start()
        var lastExpiry = ContinuousClock.now - expiryInterval
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            if ContinuousClock.now - lastExpiry >= expiryInterval {
                lastExpiry = .now
                do {
                    let expired = try await withLedgerDeadline(.seconds(10), "lease expiry") { [ledger] in
                        try await ledger.expireLeases()
                    }
                    if expired > 0 { logger.info("voided expired leases", metadata: ["count": "\(expired)"]) }
                } catch {
                    logger.error("lease expiry failed", metadata: ["error": "\(error)"])
                }
            }
            await credit.committer.probe()
            await credit.returnLeftoverLeases()
            await credit.upkeep()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: leaseInterval) }
        }
        // Charges first (queued, then spooled), then the leases: their credit is released last.
        await credit.committer.flush()
        if await !credit.committer.replaySpool() {
            logger.warning("stopping with settlements still in the spool; the next start replays them")
        }
        await credit.returnLeftoverLeases()
        await credit.upkeep(closingAll: true)
    }
}
