import Foundation
import SignalboxCore

/// How a settlement closes the request's `Idempotency-Key` claim, in the same transaction. Only
/// the claim's owner (the settlement's generation) closes it: a settlement whose claim was taken
/// over meanwhile is a conflict, its charge refused and booked as overage (`Settlement.refusingCharges`).
public enum IdempotencyOutcome: Sendable, Hashable, Codable {
    /// The request succeeded: keep its response for retries.
    case completed(account: String, key: String, response: String)
    /// The request failed and charged nothing: a retry may run it again.
    case released(account: String, key: String)

    public var account: String {
        switch self {
        case .completed(let account, _, _), .released(let account, _): account
        }
    }

    public var key: String {
        switch self {
        case .completed(_, let key, _), .released(_, let key): key
        }
    }
}

/// The reservation a settlement draws on.
public enum Reservation: Sendable, Hashable, Codable {
    /// A node's lease on the account: shrunk by `release` (what the request spent plus any unused
    /// credit the node gives back), never below zero, and left open for later requests.
    case lease(id: String, release: Money)
}

/// Everything one finished request writes to the ledger, in one unit: its charge and insurance
/// transfers, its generation record, its reservation's release and its idempotency claim.
public struct Settlement: Sendable, Hashable, Codable {
    public var reservation: Reservation?
    public var transfers: [TransferRequest]
    public var generation: GenerationRecord
    public var idempotency: IdempotencyOutcome?

    public init(
        reservation: Reservation?, transfers: [TransferRequest], generation: GenerationRecord,
        idempotency: IdempotencyOutcome? = nil
    ) {
        self.reservation = reservation
        self.transfers = transfers
        self.generation = generation
        self.idempotency = idempotency
    }

    private enum CodingKeys: String, CodingKey { case reservation, transfers, generation, idempotency }
    private enum LegacyReservationKeys: String, CodingKey { case hold }

    /// A spool written by a version with per-request holds may carry `{"hold": …}`: it settles
    /// with no reservation (its charge still posts; the hold itself expires in the ledger).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let legacy = try? container.nestedContainer(keyedBy: LegacyReservationKeys.self, forKey: .reservation),
            legacy.contains(.hold)
        {
            reservation = nil
        } else {
            reservation = try container.decodeIfPresent(Reservation.self, forKey: .reservation)
        }
        transfers = try container.decode([TransferRequest].self, forKey: .transfers)
        generation = try container.decode(GenerationRecord.self, forKey: .generation)
        idempotency = try container.decodeIfPresent(IdempotencyOutcome.self, forKey: .idempotency)
    }
}

extension Settlement {
    /// The settlement of a request whose `Idempotency-Key` another request took over while it
    /// ran (its node was thought dead): the retry is the one the client pays for, so this one's
    /// customer charges become the operator's overage, its recorded cost zero, and the claim is
    /// left to its new owner. The provider is still paid for the tokens it served.
    public func refusingCharges() -> Settlement {
        var copy = self
        copy.idempotency = nil
        copy.generation.cost = .zero
        copy.transfers = transfers.map { transfer in
            guard !Billing.SystemAccount.isSystem(transfer.debitAccount) else { return transfer }
            return TransferRequest(
                idempotencyKey: "conflict:" + transfer.idempotencyKey, debit: Billing.SystemAccount.overage,
                credit: transfer.creditAccount, amount: transfer.amount, kind: .overage, keyID: transfer.keyID,
                generationID: transfer.generationID, memo: "Idempotency-Key taken over; charge refused: " + (transfer.memo ?? ""))
        }
        return copy
    }

    /// A settlement whose reservation no longer backs it (its lease or hold expired and the
    /// credit may back other requests now): each customer debit is cut to what the account still
    /// has available, and the rest is booked as the operator's overage, so the provider is still
    /// paid in full and no customer goes below what it holds. The generation's recorded cost
    /// becomes what was charged. `available` is updated with what the cut transfers take.
    public func coveringShortfall(available: inout [String: Money]) -> Settlement {
        var result: [TransferRequest] = []
        var cutCharges = Money.zero
        for transfer in transfers {
            let payer = transfer.debitAccount
            guard !Billing.SystemAccount.isSystem(payer), let left = available[payer], transfer.amount > left else {
                if let left = available[payer] { available[payer] = left - transfer.amount }
                result.append(transfer)
                continue
            }
            let covered = max(.zero, left)
            var cut = transfer
            cut.amount = covered
            result.append(cut)
            available[payer] = left - covered
            if transfer.kind == .charge { cutCharges += transfer.amount - covered }
            result.append(
                TransferRequest(
                    idempotencyKey: "overage:" + transfer.idempotencyKey, debit: Billing.SystemAccount.overage,
                    credit: transfer.creditAccount, amount: transfer.amount - covered, kind: .overage, keyID: transfer.keyID,
                    generationID: transfer.generationID, memo: "beyond an expired reservation: " + (transfer.memo ?? transfer.kind.rawValue)
                ))
        }
        var copy = self
        copy.transfers = result
        copy.generation.cost = max(.zero, generation.cost - cutCharges)
        return copy
    }
}

/// What a settlement batch found.
public struct SettlementResult: Sendable, Hashable {
    /// Leases that were no longer open: the settlements on them were
    /// charged only what the account had available (`Settlement.coveringShortfall`).
    public var closedReservations: Set<String>

    public init(closedReservations: Set<String> = []) { self.closedReservations = closedReservations }
}
