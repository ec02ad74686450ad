import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Providers
import ServiceLifecycle
import SignalboxCore

/// Turns readiness off as soon as a graceful shutdown starts (SIGTERM), so load balancers
/// stop sending new requests while in-flight streams finish.
public struct DrainOnShutdownService: Service {
    let readiness: Readiness
    let onDrain: @Sendable () async -> Void

    /// `onDrain` runs once readiness is off (a cluster node announces it is leaving).
    public init(readiness: Readiness, onDrain: @escaping @Sendable () async -> Void = {}) {
        self.readiness = readiness
        self.onDrain = onDrain
    }

    public func run() async throws {
        try? await gracefulShutdown()
        readiness.set(false)
        await onDrain()
    }
}
