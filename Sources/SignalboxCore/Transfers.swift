import Foundation

/// What a transfer is for; stored with every ledger entry so admins can query by it.
public enum TransferKind: String, Sendable, Codable, CaseIterable {
    case purchase, fee, grant, charge, insurance, overage, refund, reversal, adjustment
}

/// A request to move money from one account to another. Balanced by construction: the
/// debit side loses exactly what the credit side gains.
public struct TransferRequest: Sendable, Hashable, Codable {
    /// Replaying a transfer with the same key is a no-op.
    public var idempotencyKey: String
    public var debitAccount: String
    public var creditAccount: String
    public var amount: Money
    public var kind: TransferKind
    public var keyID: String?
    public var generationID: String?
    public var memo: String?

    public init(
        idempotencyKey: String, debit: String, credit: String, amount: Money, kind: TransferKind,
        keyID: String? = nil, generationID: String? = nil, memo: String? = nil
    ) {
        self.idempotencyKey = idempotencyKey
        self.debitAccount = debit
        self.creditAccount = credit
        self.amount = amount
        self.kind = kind
        self.keyID = keyID
        self.generationID = generationID
        self.memo = memo
    }
}

extension TransferRequest {
    /// Every entry moves a positive amount of at most `Money.maximumAmount` (zero is allowed for
    /// a record that moves nothing).
    public var hasValidAmount: Bool { amount >= .zero && amount <= .maximumAmount }

    /// A credit purchase: the account gets `credit`, and the platform's fee (5.5%, $0.80
    /// minimum) is recorded as fee revenue; both come from `platform:purchases`, the money the
    /// buyer paid. `reference` (the payment's id) makes a repeat record nothing.
    public static func purchase(account: String, credit: Money, reference: String) -> [TransferRequest] {
        [
            TransferRequest(
                idempotencyKey: "purchase:\(reference)", debit: Billing.SystemAccount.purchases, credit: account,
                amount: credit, kind: .purchase, memo: "credit purchase \(reference)"),
            TransferRequest(
                idempotencyKey: "fee:\(reference)", debit: Billing.SystemAccount.purchases,
                credit: Billing.SystemAccount.fees, amount: Billing.purchaseFee(for: credit), kind: .fee,
                memo: "platform fee \(reference)"),
        ]
    }

    /// Promotional credit, without a fee.
    public static func grant(account: String, credit: Money, reference: String) -> TransferRequest {
        TransferRequest(
            idempotencyKey: "grant:\(reference)", debit: Billing.SystemAccount.grants, credit: account,
            amount: credit, kind: .grant, memo: "grant \(reference)")
    }
}

/// A posted ledger entry.
public struct Transfer: Sendable, Hashable, Codable {
    public var id: Int64
    public var idempotencyKey: String
    public var debitAccount: String
    public var creditAccount: String
    public var amount: Money
    public var kind: TransferKind
    public var keyID: String?
    public var generationID: String?
    public var memo: String?
    public var createdAt: Date

    public init(
        id: Int64, idempotencyKey: String, debitAccount: String, creditAccount: String, amount: Money, kind: TransferKind,
        keyID: String?, generationID: String?, memo: String?, createdAt: Date
    ) {
        self.id = id
        self.idempotencyKey = idempotencyKey
        self.debitAccount = debitAccount
        self.creditAccount = creditAccount
        self.amount = amount
        self.kind = kind
        self.keyID = keyID
        self.generationID = generationID
        self.memo = memo
        self.createdAt = createdAt
    }
}
