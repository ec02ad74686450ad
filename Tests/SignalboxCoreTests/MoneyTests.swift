import Testing
@testable import SignalboxCore

@Suite struct MoneyTests {
    @Test func parsesAndPrintsDecimalAmountsExactly() {
        #expect(Money(decimal: "10")?.nanos == 10_000_000_000)
        #expect(Money(decimal: "0.000000001")?.nanos == 1)
        #expect(Money(decimal: "-2.5")?.decimalString == "-2.5")
        #expect(Money(decimal: "0.1")!.decimalString == "0.1")
        #expect(Money(nanos: 14_000).decimalString == "0.000014")
    }

    @Test func readsEveryJSONNumberFormExactly() {
        // What JSON libraries write for amounts: exponents, either case, a sign on the exponent.
        #expect(Money(decimal: "1e3")?.nanos == 1_000_000_000_000)
        #expect(Money(decimal: "2.5E-3")?.nanos == 2_500_000)
        #expect(Money(decimal: "1e-09")?.nanos == 1)
        #expect(Money(decimal: "1.5e+1")?.decimalString == "15")
        #expect(Money(decimal: "-0.0")?.nanos == 0)
    }

    @Test func rejectsAnythingThatIsNotADecimalNumber() {
        for text in ["", "1.2.3", "abc", "0.0000000001", "1e-10", "1,5", ".", "1e", "e3", "1e+", "1e99999", "0x10", "1.e3"] {
            #expect(Money(decimal: text) == nil, "\(text)")
        }
    }

    @Test func keepsPerTokenPricesExactAsPublished() {
        let price = TokenPrice("0.00000015")!
        #expect(price.text == "0.00000015")
        #expect(price.attos == 150_000_000_000)
        #expect(TokenPrice("0.0000000375")!.attos == 37_500_000_000)
        #expect(TokenPrice("-1") == nil)
    }

    @Test func roundsACostOnceHalfAwayFromZero() {
        #expect(Money(roundingAttos: 1_499_999_999).nanos == 1)
        #expect(Money(roundingAttos: 1_500_000_000).nanos == 2)
        #expect(Money(ceilingAttos: 1_000_000_001).nanos == 2)
    }

    @Test func costsTokensAtEachPriceWithoutDrift() {
        // 1,234 prompt tokens at $0.15/M and 567 completion tokens at $0.60/M:
        // 0.0001851 + 0.0003402 = 0.0005253 exactly.
        let pricing = EndpointPricing(prompt: TokenPrice("0.00000015")!, completion: TokenPrice("0.0000006")!)
        let cost = CostBreakdown(usage: TokenUsage(promptTokens: 1234, completionTokens: 567), pricing: pricing)
        #expect(cost.total.decimalString == "0.0005253")
        #expect(cost.prompt + cost.completion == cost.total)
    }

    @Test func billsCachedPromptTokensAtTheCacheReadPrice() {
        let pricing = EndpointPricing(
            prompt: TokenPrice("0.000003")!, completion: TokenPrice("0.000015")!,
            inputCacheRead: TokenPrice("0.0000003")!, inputCacheWrite: TokenPrice("0.00000375")!)
        let usage = TokenUsage(promptTokens: 1000, completionTokens: 0, cachedTokens: 600, cacheWriteTokens: 100)
        // 300 × 3e-6 + 600 × 3e-7 + 100 × 3.75e-6 = 0.0009 + 0.00018 + 0.000375
        #expect(CostBreakdown(usage: usage, pricing: pricing).total.decimalString == "0.001455")
    }

    @Test func purchaseFeeIsFivePointFivePercentWithAnEightyCentMinimum() {
        #expect(Billing.purchaseFee(for: Money(dollars: 100)).decimalString == "5.5")
        #expect(Billing.purchaseFee(for: Money(dollars: 10)).decimalString == "0.8")
        #expect(Billing.purchaseFee(for: Money(decimal: "14.55")!).decimalString == "0.80025")
        #expect(Billing.purchaseFee(for: Money(dollars: 1)).decimalString == "0.8")
    }
}
