/// Signalbox's billing rules, as pure functions.
public enum Billing {
    /// The platform fee on a credit purchase: 5.5% of the amount, at least $0.80, rounded up
    /// to the nano-dollar. Token costs carry no markup; this fee is the platform's only revenue.
    public static func purchaseFee(for amount: Money) -> Money {
        let percentage = (Int128(amount.nanos) * 55 + 999) / 1000
        return max(Money(nanos: Int64(percentage)), minimumPurchaseFee)
    }

    public static let minimumPurchaseFee = Money(nanos: 800_000_000)

    /// The system accounts every ledger has, with fixed ids.
    public enum SystemAccount {
        /// Platform fee revenue from credit purchases.
        public static let fees = "platform:fees"
        /// Cash in: the counter-account of every purchase.
        public static let purchases = "platform:purchases"
        /// Promotional credit given away.
        public static let grants = "platform:grants"
        /// What failed attempts cost the operator at providers (zero completion insurance).
        public static let insurance = "platform:insurance"
        /// Payables owed to a provider for the tokens it served.
        public static func provider(_ slug: String) -> String { "provider:\(slug)" }

        public static let all = [fees, purchases, grants, insurance]
    }
}

/// The free tier's request limits on `:free` models (OpenRouter's published numbers).
public enum FreeTier {
    public static let requestsPerMinute = 20
    /// Accounts that bought less than `creditThreshold` in total get `smallDailyLimit` requests a
    /// day; the others `largeDailyLimit`.
    public static let creditThreshold = Money(dollars: 10)
    public static let smallDailyLimit = 50
    public static let largeDailyLimit = 1000

    public static func dailyLimit(purchased: Money) -> Int {
        purchased >= creditThreshold ? largeDailyLimit : smallDailyLimit
    }
}
