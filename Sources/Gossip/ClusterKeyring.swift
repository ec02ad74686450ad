import Crypto
import Foundation

/// The keys that authenticate and encrypt gossip (AES-256-GCM).
///
/// Every datagram is sealed with the primary key; any key in the ring opens one. Rotation without
/// downtime: add the new key to every node's ring (second line), then make it primary (first line)
/// everywhere, then remove the old one. A datagram no key opens is dropped and counted.
///
/// Sealed datagram: `0x01` (format), 4 bytes of key id (the first bytes of SHA-256 of the key), the
/// 12-byte nonce, then ciphertext and 16-byte tag. The key id only picks the key; a wrong or forged
/// one simply fails to open.
public struct ClusterKeyring: Sendable {
    /// Raw key bytes (`SymmetricKey` is not `Sendable` on every platform); the first is primary.
    private let keyBytes: [[UInt8]]
    private let keyIDs: [[UInt8]]

    public var count: Int { keyBytes.count }

    /// `keys[0]` is the primary (sending) key.
    public init(keys: [SymmetricKey]) throws {
        guard !keys.isEmpty else { throw KeyringError.empty }
        guard keys.allSatisfy({ $0.bitCount == 256 }) else { throw KeyringError.badKey("keys must be 256 bits") }
        keyBytes = keys.map { $0.withUnsafeBytes { Array($0) } }
        keyIDs = keys.map(Self.keyID)
    }

    /// A new random 256-bit key, as the key file stores it (base64).
    public static func generateKeyText() -> String {
        SymmetricKey(size: .bits256).withUnsafeBytes { Data($0).base64EncodedString() }
    }

    /// Reads a key file: one base64 key per line, the first is primary; blank lines and `#`
    /// comments are ignored.
    public init(contentsOfFile path: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try self.init(text: text)
    }

    public init(text: String) throws {
        var keys: [SymmetricKey] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let data = Data(base64Encoded: trimmed), data.count == 32 else {
                throw KeyringError.badKey("each line must be a base64 256-bit key (signalbox cluster keygen)")
            }
            keys.append(SymmetricKey(data: data))
        }
        try self.init(keys: keys)
    }

    static func keyID(_ key: SymmetricKey) -> [UInt8] {
        key.withUnsafeBytes { Array(SHA256.hash(data: Data($0)).prefix(4)) }
    }

    private static let format: UInt8 = 1

    /// Bytes sealing adds to a frame: format, key id, nonce and tag.
    public static let sealOverhead = 1 + 4 + 12 + 16

    /// The primary (sending) key's id, as hex.
    public var primaryKeyID: String { Self.hex(keyIDs[0]) }

    /// Every key's id, as hex, primary first.
    public var keyIDStrings: [String] { keyIDs.map(Self.hex) }

    /// The key id a sealed datagram names (whether or not any key opens it), as hex.
    public static func keyID(ofSealed datagram: [UInt8]) -> String? {
        guard datagram.count >= 5 else { return nil }
        return hex(Array(datagram[1..<5]))
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let text = String(byte, radix: 16)
            return byte < 16 ? "0" + text : text
        }.joined()
    }

    public func seal(_ plaintext: [UInt8]) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: SymmetricKey(data: keyBytes[0]))
        return [Self.format] + keyIDs[0] + Array(box.nonce) + Array(box.ciphertext) + Array(box.tag)
    }

    /// The plaintext, or nil when no key in the ring opens the datagram.
    public func open(_ datagram: [UInt8]) -> [UInt8]? {
        guard datagram.count >= 1 + 4 + 12 + 16, datagram[0] == Self.format else { return nil }
        let id = Array(datagram[1..<5])
        guard let nonce = try? AES.GCM.Nonce(data: datagram[5..<17]) else { return nil }
        let body = datagram[17...]
        let ciphertext = body.dropLast(16)
        let tag = body.suffix(16)
        guard let box = try? AES.GCM.SealedBox(nonce: nonce, ciphertext: ciphertext, tag: tag) else { return nil }
        for (bytes, keyID) in zip(keyBytes, keyIDs) where keyID == id {
            if let opened = try? AES.GCM.open(box, using: SymmetricKey(data: bytes)) { return Array(opened) }
        }
        return nil
    }
}

public enum KeyringError: Error, CustomStringConvertible {
    case empty
    case badKey(String)

    public var description: String {
        switch self {
        case .empty: "the cluster key file has no key"
        case .badKey(let why): "bad cluster key: \(why)"
        }
    }
}
