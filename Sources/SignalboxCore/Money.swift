/// An exact amount of US dollars, held as an integer count of nano-dollars (1e-9 USD).
///
/// Money is never a floating-point number in Signalbox: prices, holds, charges and balances
/// are integers, and a request's cost is rounded once, when it is computed from token counts.
public struct Money: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// Nano-dollars per dollar.
    public static let scale: Int64 = 1_000_000_000
    public static let zero = Money(nanos: 0)
    /// The largest amount one ledger entry may move: purchases, grants, reversals and charges
    /// above it are refused. With it, a balance needs over 9,000 maximal entries to leave the
    /// 64-bit range, and the ledger refuses the entry that would (it never wraps or rounds).
    public static let maximumAmount = Money(dollars: 1_000_000)

    public var nanos: Int64

    public init(nanos: Int64) { self.nanos = nanos }

    /// Whole dollars.
    public init(dollars: Int64) { self.nanos = dollars * Money.scale }

    /// Parses a decimal string such as `"10"`, `"0.25"` or `"-1.000000001"`.
    /// Returns nil for anything that is not a plain decimal with at most 9 fractional digits.
    public init?(decimal text: String) {
        guard let parsed = ExactDecimal(text), parsed.fractionDigits <= 9 else { return nil }
        var value = parsed.significand
        for _ in parsed.fractionDigits..<9 {
            let (product, overflow) = value.multipliedReportingOverflow(by: 10)
            if overflow { return nil }
            value = product
        }
        guard let nanos = Int64(exactly: value) else { return nil }
        self.nanos = nanos
    }

    /// The amount as a decimal string without trailing zeros: `"0.000014"`, `"10"`, `"-2.5"`.
    public var decimalString: String {
        let negative = nanos < 0
        let magnitude = nanos.magnitude
        let whole = magnitude / UInt64(Money.scale)
        var fraction = String(magnitude % UInt64(Money.scale))
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.last == "0" { fraction.removeLast() }
        let body = fraction.isEmpty ? "\(whole)" : "\(whole).\(fraction)"
        return negative ? "-" + body : body
    }

    public var description: String { "$" + decimalString }

    /// The sum, or nil when it leaves the 64-bit range.
    public func adding(_ other: Money) -> Money? {
        let (sum, overflow) = nanos.addingReportingOverflow(other.nanos)
        return overflow ? nil : Money(nanos: sum)
    }

    /// The product, or nil when it leaves the 64-bit range.
    public func multiplied(by factor: Int64) -> Money? {
        let (product, overflow) = nanos.multipliedReportingOverflow(by: factor)
        return overflow ? nil : Money(nanos: product)
    }

    public static func < (lhs: Money, rhs: Money) -> Bool { lhs.nanos < rhs.nanos }
    public static func + (lhs: Money, rhs: Money) -> Money { Money(nanos: lhs.nanos + rhs.nanos) }
    public static func - (lhs: Money, rhs: Money) -> Money { Money(nanos: lhs.nanos - rhs.nanos) }
    public static func += (lhs: inout Money, rhs: Money) { lhs.nanos += rhs.nanos }
    public static func -= (lhs: inout Money, rhs: Money) { lhs.nanos -= rhs.nanos }
    public static prefix func - (value: Money) -> Money { Money(nanos: -value.nanos) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let money = Money(decimal: text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a decimal amount: \(text)")
        }
        self = money
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(decimalString)
    }
}

/// A decimal number parsed from text without going through binary floating point.
public struct ExactDecimal: Sendable, Hashable {
    public var significand: Int128
    public var fractionDigits: Int

    /// The most fractional digits kept: digits past the 36th are dropped (rounded toward zero).
    public static let maximumFractionDigits = 36

    /// Accepts every JSON number form, `[-]digits[.digits][(e|E)[+|-]digits]` (`0.15`, `1e-07`,
    /// `1E3`, `2.50`, `-0.0`), as long as the value fits in 38 significant digits once scaled.
    public init?(_ text: String) {
        var bytes = Substring(text).utf8[...]
        var negative = false
        if bytes.first == UInt8(ascii: "-") {
            negative = true
            bytes = bytes.dropFirst()
        }
        guard !bytes.isEmpty else { return nil }
        var value: Int128 = 0
        var fraction = -1
        var digits = 0
        var exponent = 0
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                guard let parsed = Self.exponent(bytes[bytes.index(after: index)...]) else { return nil }
                exponent = parsed
                break
            }
            bytes.formIndex(after: &index)
            if byte == UInt8(ascii: ".") {
                guard fraction < 0 else { return nil }
                fraction = 0
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (product, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            value = product + Int128(byte - UInt8(ascii: "0"))
            digits += 1
            if fraction >= 0 { fraction += 1 }
        }
        guard digits > 0, fraction != 0 else { return nil }
        var scale = max(fraction, 0) - exponent
        while scale < 0 {
            let (product, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            value = product
            scale += 1
        }
        // Digits past the kept ones: a value of 38 digits at most is zero after 39 divisions.
        if scale - Self.maximumFractionDigits > 39 { (value, scale) = (0, Self.maximumFractionDigits) }
        while scale > Self.maximumFractionDigits {
            value /= 10
            scale -= 1
        }
        significand = negative ? -value : value
        fractionDigits = scale
    }

    /// True when this number is larger than `other`, whatever their fraction digits.
    public func isGreater(than other: ExactDecimal) -> Bool {
        var (left, right) = (significand, other.significand)
        var (leftDigits, rightDigits) = (fractionDigits, other.fractionDigits)
        // Scaled to the same fraction digits; a side that outgrows 128 bits is the larger in magnitude.
        while leftDigits < rightDigits {
            let (product, overflow) = left.multipliedReportingOverflow(by: 10)
            if overflow { return left > 0 }
            (left, leftDigits) = (product, leftDigits + 1)
        }
        while rightDigits < leftDigits {
            let (product, overflow) = right.multipliedReportingOverflow(by: 10)
            if overflow { return right < 0 }
            (right, rightDigits) = (product, rightDigits + 1)
        }
        return left > right
    }

    /// A signed exponent of at most four digits (a larger one cannot scale a value that fits).
    private static func exponent(_ bytes: Substring.UTF8View.SubSequence) -> Int? {
        var rest = bytes
        var negative = false
        if rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: "-") {
            negative = rest.first == UInt8(ascii: "-")
            rest = rest.dropFirst()
        }
        guard !rest.isEmpty, rest.count <= 4, rest.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return nil
        }
        let value = rest.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return negative ? -value : value
    }
}

/// A per-token (or per-request) price in USD, kept exactly as the catalog's decimal string.
///
/// Internally the price is an integer count of atto-dollars (1e-18 USD), which represents every
/// published per-token price exactly; costs multiply in 128-bit integers and round to
/// nano-dollars once per request (see `Money(roundingAttos:)`).
public struct TokenPrice: Sendable, Hashable, Codable, CustomStringConvertible {
    public static let zero = TokenPrice(attos: 0, text: "0")
    static let attosPerNano: Int128 = 1_000_000_000

    /// Atto-dollars per token.
    public let attos: Int128
    /// The decimal string as published, so `/models` shows exactly what the catalog says.
    public let text: String

    private init(attos: Int128, text: String) {
        self.attos = attos
        self.text = text
    }

    /// Parses a non-negative decimal price with at most 18 fractional digits.
    public init?(_ text: String) {
        guard let parsed = ExactDecimal(text), parsed.significand >= 0, parsed.fractionDigits <= 18 else { return nil }
        var value = parsed.significand
        for _ in parsed.fractionDigits..<18 { value *= 10 }
        self.init(attos: value, text: text)
    }

    public var isZero: Bool { attos == 0 }

    /// The exact cost of `count` units at this price, in atto-dollars.
    public func attos(for count: Int) -> Int128 { attos * Int128(count) }

    public var description: String { text }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let price = TokenPrice(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a decimal price: \(text)")
        }
        self = price
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}

extension Money {
    /// Rounds an exact atto-dollar amount to nano-dollars, half away from zero. This is the one
    /// place a request's cost is rounded.
    public init(roundingAttos attos: Int128) {
        let per = TokenPrice.attosPerNano
        let (quotient, remainder) = attos.quotientAndRemainder(dividingBy: per)
        var nanos = quotient
        if remainder.magnitude * 2 >= per.magnitude { nanos += attos < 0 ? -1 : 1 }
        self.init(nanos: Int64(clamping: nanos))
    }

    /// Rounds up: used for holds, which must never be smaller than the worst-case cost.
    public init(ceilingAttos attos: Int128) {
        let per = TokenPrice.attosPerNano
        let (quotient, remainder) = attos.quotientAndRemainder(dividingBy: per)
        self.init(nanos: Int64(clamping: quotient + (remainder > 0 ? 1 : 0)))
    }
}
