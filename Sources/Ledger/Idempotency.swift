import Foundation
import SignalboxCore

/// A request about to run claims its `Idempotency-Key` with this.
public struct IdempotencyClaimRequest: Sendable, Hashable {
    public var account: String
    public var key: String
    /// The request's generation id: the claim's owner, the only one that may complete or release it.
    public var generationID: String
    /// A digest of what was asked (the API key and the body): a reuse with another request is refused.
    public var fingerprint: String
    /// A pending claim not renewed for this long (its node died) is taken over, by the ledger's clock.
    public var staleAfter: TimeInterval

    public init(account: String, key: String, generationID: String, fingerprint: String, staleAfter: TimeInterval) {
        self.account = account
        self.key = key
        self.generationID = generationID
        self.fingerprint = fingerprint
        self.staleAfter = staleAfter
    }
}

/// What a request's `Idempotency-Key` claim found.
public enum IdempotencyClaim: Sendable, Hashable {
    /// The key is now this request's.
    case claimed
    /// Another request with the key is running.
    case inProgress(generationID: String)
    /// A request with the key already succeeded: its generation and response.
    case completed(generationID: String, response: String)
    /// The key was used for a different request (another body or API key).
    case reused(generationID: String)
}
