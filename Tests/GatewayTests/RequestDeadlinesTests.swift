import NIOCore
import Testing

@testable import Gateway

@Suite("Connection deadlines follow the request's phase")
struct RequestDeadlinesTests {
    var limits: ConnectionLimits {
        var limits = ConnectionLimits()
        limits.headerTimeout = .seconds(1)
        limits.bodyTimeout = .seconds(2)
        limits.idleTimeout = .seconds(3)
        return limits
    }

    @Test("a new connection has the header timeout, a body the body timeout, an answer none, then idle")
    func phases() {
        var deadlines = RequestDeadlines(limits: limits)
        #expect(deadlines.phase == .awaitingFirstHead && deadlines.allowance == .seconds(1))
        deadlines.readHead()
        #expect(deadlines.phase == .readingBody && deadlines.allowance == .seconds(2))
        deadlines.readEnd()
        #expect(deadlines.phase == .answering && deadlines.allowance == nil)
        deadlines.wroteEnd()
        #expect(deadlines.phase == .idle && deadlines.allowance == .seconds(3))
    }

    @Test("an answer written before the body was read leaves the body deadline running, then idle")
    func earlyAnswer() {
        var deadlines = RequestDeadlines(limits: limits)
        deadlines.readHead()
        deadlines.wroteEnd()
        #expect(deadlines.phase == .readingBody)
        deadlines.readEnd()
        #expect(deadlines.phase == .idle, "never stuck answering with no deadline")
    }

    @Test("pipelined requests keep the connection answering until the last answer ends")
    func pipelined() {
        var deadlines = RequestDeadlines(limits: limits)
        deadlines.readHead()
        deadlines.readEnd()
        deadlines.readHead()
        deadlines.readEnd()
        deadlines.wroteEnd()
        #expect(deadlines.phase == .answering)
        deadlines.wroteEnd()
        #expect(deadlines.phase == .idle)
    }
}

@Suite("Connection limits count addresses the way clients hold them")
struct ConnectionLimiterTests {
    @Test("IPv6 addresses count by their /64; IPv4-mapped ones as IPv4")
    func grouping() throws {
        let a = try SocketAddress(ipAddress: "2001:db8:1:2:aaaa::1", port: 1)
        let b = try SocketAddress(ipAddress: "2001:db8:1:2:bbbb::9", port: 2)
        let c = try SocketAddress(ipAddress: "2001:db8:1:3::1", port: 3)
        #expect(ConnectionLimiter.group(of: a) == ConnectionLimiter.group(of: b))
        #expect(ConnectionLimiter.group(of: a) != ConnectionLimiter.group(of: c))
        #expect(ConnectionLimiter.group(of: try SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 4)) == "10.1.2.3")
        #expect(ConnectionLimiter.group(of: try SocketAddress(ipAddress: "10.1.2.3", port: 5)) == "10.1.2.3")
    }

    @Test("a limit per address and in all; an exempt balancer is held only to the total")
    func limits() throws {
        let balancer = try #require(AddressRange("10.0.0.0/8"))
        let limiter = ConnectionLimiter(perAddress: 2, total: 5, exempt: [balancer])
        #expect(limiter.admit("192.0.2.1") && limiter.admit("192.0.2.1"))
        #expect(!limiter.admit("192.0.2.1"), "the third from one address")
        #expect(limiter.admit("10.1.1.1") && limiter.admit("10.1.1.1") && limiter.admit("10.1.1.1"))
        #expect(!limiter.admit("10.1.1.1"), "the total holds for exempt addresses too")
        limiter.release("192.0.2.1")
        #expect(limiter.admit("198.51.100.7"))
        #expect(limiter.counts.open == 5)
        #expect(AddressRange("2001:db8::/32")?.contains("2001:db8:1:2::/64") == true)
        #expect(AddressRange("not an address") == nil && AddressRange("10.0.0.0/33") == nil)
    }
}
