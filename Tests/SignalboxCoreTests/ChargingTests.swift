import SignalboxCore
import Testing

/// The money rules of one request, alone: what a success, a cancellation and a failed attempt
/// cost, and how a cost splits between the client and the operator.
@Suite struct ChargingTests {
    /// $1 per million prompt tokens, $2 per million completion tokens.
    let pricing = EndpointPricing(prompt: TokenPrice("0.000001")!, completion: TokenPrice("0.000002")!)
    func usd(_ text: String) -> Money { Money(decimal: text)! }

    @Test func aSuccessCostsWhatTheUpstreamReportsExceptAnEmptyUnfinishedAnswer() {
        let usage = TokenUsage(promptTokens: 1000, completionTokens: 500)
        #expect(Charging.success(usage: usage, finishReason: "stop", pricing: pricing).total == usd("0.002"))
        // Zero completion insurance.
        #expect(Charging.success(usage: TokenUsage(promptTokens: 1000, completionTokens: 0), finishReason: nil, pricing: pricing) == .zero)
        // An answer that ended properly with no output still pays for its prompt.
        #expect(
            Charging.success(usage: TokenUsage(promptTokens: 1000, completionTokens: 0), finishReason: "stop", pricing: pricing)
                .total == usd("0.001"))
    }

    @Test func withoutAReportWhatArrivedIsEstimated() {
        #expect(Charging.usage(reported: nil, deliveredPieces: 0, promptEstimate: 400) == nil)
        #expect(
            Charging.usage(reported: nil, deliveredPieces: 7, promptEstimate: 400) == TokenUsage(promptTokens: 200, completionTokens: 7))
        let reported = TokenUsage(promptTokens: 9, completionTokens: 3)
        #expect(Charging.usage(reported: reported, deliveredPieces: 7, promptEstimate: 400) == reported)
    }

    @Test func aCancelledRequestPaysForWhatWasGeneratedUntilTheClientLeft() {
        let nothing = Charging.cancelled(reported: nil, deliveredPieces: 0, promptEstimate: 400, pricing: pricing)
        #expect(nothing.cost == .zero && nothing.usage == TokenUsage())
        let some = Charging.cancelled(reported: nil, deliveredPieces: 10, promptEstimate: 400, pricing: pricing)
        #expect(some.usage == TokenUsage(promptTokens: 200, completionTokens: 10))
        #expect(some.cost.total == usd("0.00022"))
    }

    @Test func aFailedAttemptsTokensAreInsuredAndCapped() {
        #expect(Charging.insurance(reported: nil, deliveredPieces: 0, promptEstimate: 400, pricing: pricing) == .zero)
        #expect(
            Charging.insurance(
                reported: TokenUsage(promptTokens: 1000, completionTokens: 0), deliveredPieces: 0,
                promptEstimate: 0, pricing: pricing) == usd("0.001"))
        let absurd = TokenUsage(promptTokens: 1 << 40, completionTokens: 1 << 40)
        #expect(Charging.insurance(reported: absurd, deliveredPieces: 0, promptEstimate: 0, pricing: pricing) == Charging.largestEntry)
    }

    @Test func theClientPaysAtMostItsReservationAndTheOperatorTheRest() {
        #expect(Charging.split(cost: usd("0.3"), reserved: usd("0.5")) == .init(charge: usd("0.3"), overage: .zero, capped: false))
        #expect(Charging.split(cost: usd("0.8"), reserved: usd("0.5")) == .init(charge: usd("0.5"), overage: usd("0.3"), capped: false))
        #expect(Charging.split(cost: usd("0.8"), reserved: .zero) == .init(charge: .zero, overage: usd("0.8"), capped: false))
        let beyond = Charging.largestEntry + usd("5")
        #expect(Charging.split(cost: beyond, reserved: usd("1")) == .init(charge: usd("1"), overage: Charging.largestEntry, capped: true))
    }
}
