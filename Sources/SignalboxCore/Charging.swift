import Foundation

/// What a request costs and who pays it: the money rules of one request, pure, so each is unit
/// tested apart from the request path (Docs/ledger.md states them).
///
/// - A successful answer costs what the upstream reports at the endpoint's prices — except an
///   empty answer with no finish reason, which costs nothing (zero completion insurance).
/// - The client pays at most what was reserved for the request; anything the upstream bills
///   beyond that is the operator's overage.
/// - Tokens a failed attempt made a provider generate are the operator's insurance expense.
/// - A request whose client left is charged for what was generated until then.
/// - When the upstream reports no usage, what arrived is estimated: one token per delivered
///   piece, and half the prompt's token bound for the prompt.
public enum Charging {
    /// The largest single entry the ledger records (`Money.maximumAmount`); a cost beyond it is an
    /// absurd upstream report and is capped.
    public static let largestEntry = Money.maximumAmount

    /// The tokens an attempt is accountable for: the upstream's report, else an estimate from
    /// the pieces that arrived; nil when nothing arrived and nothing was reported.
    public static func usage(reported: TokenUsage?, deliveredPieces: Int, promptEstimate: Int) -> TokenUsage? {
        if let reported { return reported }
        guard deliveredPieces > 0 else { return nil }
        return TokenUsage(promptTokens: promptEstimate / 2, completionTokens: deliveredPieces)
    }

    /// What a successful attempt costs.
    public static func success(usage: TokenUsage, finishReason: String?, pricing: EndpointPricing) -> CostBreakdown {
        // Zero completion insurance: an empty answer with no finish reason costs nothing.
        finishReason == nil && usage.completionTokens == 0 ? .zero : CostBreakdown(usage: usage, pricing: pricing)
    }

    /// What the tokens of an attempt the client walked away from cost (nothing if none arrived
    /// and none were reported), with the usage they were priced at.
    public static func cancelled(
        reported: TokenUsage?, deliveredPieces: Int, promptEstimate: Int,
        pricing: EndpointPricing
    ) -> (usage: TokenUsage, cost: CostBreakdown) {
        guard let usage = usage(reported: reported, deliveredPieces: deliveredPieces, promptEstimate: promptEstimate) else {
            return (TokenUsage(), .zero)
        }
        return (usage, CostBreakdown(usage: usage, pricing: pricing))
    }

    /// What a failed attempt costs the operator (insurance, never the client), capped at the
    /// largest entry.
    public static func insurance(
        reported: TokenUsage?, deliveredPieces: Int, promptEstimate: Int,
        pricing: EndpointPricing
    ) -> Money {
        guard let usage = usage(reported: reported, deliveredPieces: deliveredPieces, promptEstimate: promptEstimate) else {
            return .zero
        }
        return min(CostBreakdown(usage: usage, pricing: pricing).total, largestEntry)
    }

    /// How a cost is paid: the client's charge (at most what was reserved) and the operator's
    /// overage (the rest, capped at the largest entry; `capped` says the report was absurd).
    public struct Split: Sendable, Hashable {
        public var charge: Money
        public var overage: Money
        public var capped: Bool

        public init(charge: Money, overage: Money, capped: Bool) {
            self.charge = charge
            self.overage = overage
            self.capped = capped
        }
    }

    public static func split(cost: Money, reserved: Money) -> Split {
        let charge = max(.zero, min(cost, reserved))
        let beyond = cost - charge
        let overage = max(.zero, min(beyond, largestEntry))
        return Split(charge: charge, overage: overage, capped: overage < beyond)
    }
}
