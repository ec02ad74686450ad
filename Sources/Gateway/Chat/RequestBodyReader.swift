import Foundation
import Hummingbird
import Ledger
import NIOConcurrencyHelpers
import NIOCore
import SignalboxCore

/// Memory a node lets large request bodies take at once. Reading, checking and translating a
/// body costs up to `factor` times its size (the bytes, the upstream copy, a translation's tree);
/// a body over `smallBody` reserves that much before it is read, and waits (up to `wait`) while
/// other large bodies hold the budget. Small bodies, nearly all of them, never touch it.
public final class BodyBudget: Sendable {
    public let capacity: Int
    /// Bodies up to this size are read without a reservation.
    public let smallBody: Int
    /// Memory a body takes while it is handled, as a multiple of its size (measured with eight
    /// concurrent 32 MiB bodies: 1.8× for one refused after reading, 2.4× for one relayed, 5.2× for
    /// one translated to Anthropic's format).
    public static let factor = 6
    let wait: Duration
    private let used = NIOLockedValueBox(0)

    public init(capacity: Int, smallBody: Int = 1 << 20, wait: Duration = .seconds(30)) {
        self.capacity = capacity
        self.smallBody = smallBody
        self.wait = wait
    }

    /// Memory held by the budget's reservations now.
    public var inUse: Int { used.withLockedValue { $0 } }

    /// A part of the budget, given back by `release()` (once; later calls do nothing).
    public final class Reservation: Sendable {
        let budget: BodyBudget
        private let bytes: NIOLockedValueBox<Int>

        init(budget: BodyBudget, bytes: Int) {
            self.budget = budget
            self.bytes = NIOLockedValueBox(bytes)
        }

        public func release() {
            let held = bytes.withLockedValue { held in
                defer { held = 0 }
                return held
            }
            if held > 0 { budget.used.withLockedValue { $0 -= held } }
        }

        /// Adds `more` bytes to this reservation, waiting for room; false when none came in time.
        func grow(by more: Int) async -> Bool {
            guard await budget.take(more) else { return false }
            bytes.withLockedValue { $0 += more }
            return true
        }

        deinit { release() }
    }

    /// An empty reservation to grow.
    func reservation() -> Reservation { Reservation(budget: self, bytes: 0) }

    /// Takes `bytes` of the budget, waiting up to `wait` for room. A single body larger than the
    /// whole budget is let through once nothing else holds any, so it is slow, not refused.
    private func take(_ bytes: Int) async -> Bool {
        let deadline = ContinuousClock.now + wait
        while true {
            let granted = used.withLockedValue { used -> Bool in
                guard used + bytes <= capacity || used == 0 else { return false }
                used += bytes
                return true
            }
            if granted { return true }
            guard ContinuousClock.now < deadline, !Task.isCancelled else { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

extension RouterAPI {
    /// Reads a model request's body within the node's limits: its size (413), and for a large
    /// body the memory budget (503 when it stays full) and the account's credit (402 before a
    /// byte is read when the account has none: large bodies are never free-tier requests).
    /// The reservation is released when the request is done with the body.
    func readModelRequestBody(_ request: Request, key: KeyRecord) async throws -> (ByteBuffer, BodyBudget.Reservation) {
        let limit = dependencies.configuration.maxBodyBytes
        let budget = bodyBudget
        let reservation = budget.reservation()
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > limit { throw Self.tooLarge(limit) }
        var creditChecked = false
        // A declared large body takes its whole share before it is read: taken piecemeal, bodies
        // arriving together would each hold part of the budget and wait for more (a deadlock
        // only the wait's timeout ends). A chunked one (no length to go by) takes it as it grows.
        var covered = budget.smallBody
        if let declared, declared > budget.smallBody {
            try await requireCredit(for: key, bodyBytes: declared)
            creditChecked = true
            guard await reservation.grow(by: declared * BodyBudget.factor) else { throw Self.budgetFull }
            covered = declared
        }
        var body = ByteBuffer()
        if let declared { body.reserveCapacity(declared) }
        do {
            for try await part in request.body {
                body.writeImmutableBuffer(part)
                guard body.readableBytes <= limit else { throw Self.tooLarge(limit) }
                if body.readableBytes > covered {
                    if !creditChecked {
                        try await requireCredit(for: key, bodyBytes: body.readableBytes)
                        creditChecked = true
                    }
                    let next = max(body.readableBytes, min(limit, covered * 2))
                    guard await reservation.grow(by: (next - (covered == budget.smallBody ? 0 : covered)) * BodyBudget.factor)
                    else { throw Self.budgetFull }
                    covered = next
                }
            }
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw Self.tooLarge(limit)
        }
        return (body, reservation)
    }

    /// 402 unless the key's account has credit: a large body is never a free-tier request.
    private func requireCredit(for key: KeyRecord, bodyBytes: Int) async throws {
        let ledger = dependencies.ledger
        let balance = try await withLedgerDeadline(.seconds(2), "a balance check") { try await ledger.balance(account: key.accountID) }
        guard balance.balance > .zero else {
            throw APIError(
                status: 402,
                message: "This account has no credit; a request body of \(bodyBytes) bytes is refused before it is read "
                    + "(bodies over \(bodyBudget.smallBody) bytes are never free-tier requests). Add credit and retry.")
        }
    }

    static func tooLarge(_ limit: Int) -> APIError {
        APIError(status: 413, message: "Request body is larger than \(limit) bytes")
    }

    static var budgetFull: APIError {
        APIError(
            status: 503,
            message: "This node is busy reading other large request bodies; retry shortly (or send a smaller body).",
            metadata: ["reason": "body_budget_full", "error_type": "overloaded"], headers: [("Retry-After", "2")])
    }
}
