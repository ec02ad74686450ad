import Testing

@testable import Providers

/// The pool's rules without sockets: connections are integers, time is given.
@Suite struct UpstreamPoolStateTests {
    let a = UpstreamOrigin(tls: true, host: "a.example", port: 443)
    let b = UpstreamOrigin(tls: false, host: "b.internal", port: 8080)
    let start = ContinuousClock.now

    @Test func openConnectionsAreLimitedPerOrigin() {
        var pool = UpstreamPoolState<Int>(limits: .init(maxConnectionsPerOrigin: 2, maxIdlePerOrigin: 2))
        let decision1 = pool.lease(a)
        #expect(decision1 == .connect)
        let decision2 = pool.lease(a)
        #expect(decision2 == .connect)
        let decision3 = pool.lease(a)
        #expect(decision3 == .refuse)
        let decision4 = pool.lease(b)
        #expect(decision4 == .connect, "another origin has its own limit")
        pool.connectFailed(a)
        let decision5 = pool.lease(a)
        #expect(decision5 == .connect, "a failed connect gives its place back")
        pool.closed(1, of: a)
        #expect(pool.counts(a) == (open: 1, idle: 0))
    }

    @Test func theMostRecentlyReleasedConnectionIsReusedFirst() {
        var pool = UpstreamPoolState<Int>(limits: .init(maxConnectionsPerOrigin: 10, maxIdlePerOrigin: 10))
        for _ in 0..<3 { _ = pool.lease(a) }
        let decision6 = pool.release(1, to: a, now: start)
        #expect(!decision6)
        let decision7 = pool.release(2, to: a, now: start + .seconds(1))
        #expect(!decision7)
        let decision8 = pool.lease(a)
        #expect(decision8 == .reuse(2))
        let decision9 = pool.lease(a)
        #expect(decision9 == .reuse(1))
        let decision10 = pool.lease(a)
        #expect(decision10 == .connect)
        #expect(pool.counts(a) == (open: 4, idle: 0))
    }

    @Test func idleConnectionsBeyondTheIdleLimitAreClosedAndTheirPlaceFreedWhenTheyAre() {
        var pool = UpstreamPoolState<Int>(limits: .init(maxConnectionsPerOrigin: 3, maxIdlePerOrigin: 1))
        for _ in 0..<3 { _ = pool.lease(a) }
        let decision11 = pool.release(1, to: a, now: start)
        #expect(!decision11)
        let decision12 = pool.release(2, to: a, now: start)
        #expect(decision12, "the second idle one is to be closed")
        #expect(pool.counts(a) == (open: 3, idle: 1), "it still counts until its channel is gone")
        pool.closed(2, of: a)
        #expect(pool.counts(a) == (open: 2, idle: 1))
    }

    @Test func aConnectionClosedWhileIdleLeavesThePool() {
        var pool = UpstreamPoolState<Int>(limits: .init())
        _ = pool.lease(a)
        _ = pool.release(7, to: a, now: start)
        pool.closed(7, of: a)
        #expect(pool.counts(a) == (open: 0, idle: 0))
        let decision13 = pool.lease(a)
        #expect(decision13 == .connect)
    }

    @Test func idleConnectionsExpireOldestFirst() {
        var pool = UpstreamPoolState<Int>(limits: .init(idleTimeout: .seconds(60)))
        for _ in 0..<3 { _ = pool.lease(a) }
        _ = pool.lease(b)
        _ = pool.release(1, to: a, now: start)
        _ = pool.release(2, to: a, now: start + .seconds(30))
        _ = pool.release(3, to: a, now: start + .seconds(50))
        _ = pool.release(4, to: b, now: start)
        let decision14 = pool.expire(now: start + .seconds(59))
        #expect(decision14.isEmpty)
        let decision15 = pool.expire(now: start + .seconds(90))
        #expect(Set(decision15) == [1, 2, 4])
        #expect(pool.counts(a) == (open: 3, idle: 1))
        for connection in [1, 2] { pool.closed(connection, of: a) }
        pool.closed(4, of: b)
        #expect(pool.counts(a) == (open: 1, idle: 1))
        #expect(pool.counts(b) == (open: 0, idle: 0))
        let decision16 = pool.drainIdle()
        #expect(decision16 == [3])
    }
}
