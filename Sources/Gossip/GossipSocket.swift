#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import NIOCore

#if canImport(Glibc)
    private let systemClose = Glibc.close
    private let systemBind = Glibc.bind
#else
    private let systemClose = Darwin.close
    private let systemBind = Darwin.bind
#endif

/// The gossip UDP socket, bound here and shared two ways: SwiftNIO reads it (it owns one
/// descriptor), and datagrams leave through `sendto` on a duplicate descriptor. A send error —
/// EPERM from a firewall rule, an unreachable network — is then just a counted error: it never
/// closes the socket, as it would inside SwiftNIO's datagram channel.
///
/// `isIntact` tells whether the duplicate still names the socket it was made for (it fails if
/// the descriptor was closed under the process), so the agent can notice and bind again.
final class GossipSocket: Sendable {
    /// For SwiftNIO's `withBoundSocket`, which takes ownership of it.
    let readDescriptor: CInt
    private let sendDescriptor: CInt
    private let inode: UInt64

    enum SendOutcome {
        case sent
        case refused(CInt)
        case broken(CInt)
    }

    struct SocketError: Error, CustomStringConvertible {
        var call: String
        var code: CInt
        var description: String { "\(call): \(String(cString: strerror(code))) (errno \(code))" }
    }

    /// A non-blocking UDP socket bound to `address` (SO_REUSEADDR, so a rebind takes the same port at once).
    init(binding address: SocketAddress) throws {
        let family: CInt
        switch address {
        case .v4: family = AF_INET
        case .v6: family = AF_INET6
        default: throw SocketError(call: "socket", code: EAFNOSUPPORT)
        }
        #if canImport(Glibc)
            let kind = CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue)
        #else
            let kind = SOCK_DGRAM
        #endif
        let descriptor = socket(family, kind, 0)
        guard descriptor >= 0 else { throw SocketError(call: "socket", code: errno) }
        var one: CInt = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        let bound = Self.withSockAddr(address) { pointer, length in systemBind(descriptor, pointer, length) }
        guard bound == 0 else {
            let code = errno
            _ = systemClose(descriptor)
            throw SocketError(call: "bind \(address)", code: code)
        }
        let duplicate = dup(descriptor)
        guard duplicate >= 0 else {
            let code = errno
            _ = systemClose(descriptor)
            throw SocketError(call: "dup", code: code)
        }
        readDescriptor = descriptor
        sendDescriptor = duplicate
        inode = Self.inode(of: duplicate) ?? 0
    }

    /// The bound port.
    var port: Int? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sendDescriptor, $0, &length) }
        }
        guard result == 0 else { return nil }
        switch CInt(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
        default: return nil
        }
    }

    /// Whether the send descriptor still names this socket.
    var isIntact: Bool { Self.inode(of: sendDescriptor) == inode }

    func send(_ bytes: [UInt8], to address: SocketAddress) -> SendOutcome {
        let result = bytes.withUnsafeBytes { buffer in
            Self.withSockAddr(address) { pointer, length in
                sendto(sendDescriptor, buffer.baseAddress, buffer.count, CInt(MSG_NOSIGNAL), pointer, length)
            }
        }
        if result >= 0 { return .sent }
        let code = errno
        return code == EBADF || code == ENOTSOCK ? .broken(code) : .refused(code)
    }

    /// Closes the send descriptor, unless it was closed already and now names something else.
    func close() {
        if isIntact { _ = systemClose(sendDescriptor) }
    }

    private static func inode(of descriptor: CInt) -> UInt64? {
        var status = stat()
        guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        return UInt64(status.st_ino)
    }

    private static func withSockAddr<T>(_ address: SocketAddress, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        switch address {
        case .v4(let v4):
            var raw = v4.address
            return withUnsafePointer(to: &raw) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(let v6):
            var raw = v6.address
            return withUnsafePointer(to: &raw) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        default:
            var empty = sockaddr()
            return body(&empty, 0)
        }
    }
}
