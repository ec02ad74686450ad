import Crypto
import Foundation
import Gossip
import Logging
import NIOPosix
import Testing

@Suite struct ClusterKeyringTests {
    @Test func sealedDatagramsOpenWithAnyKeyInTheRingAndNothingElse() throws {
        let (oldText, newText) = (ClusterKeyring.generateKeyText(), ClusterKeyring.generateKeyText())
        let old = try ClusterKeyring(text: oldText)
        let rotating = try ClusterKeyring(text: newText + "\n" + oldText)  // new primary, old still accepted
        let message = Array("hello cluster".utf8)
        #expect(rotating.open(try old.seal(message)) == message)
        #expect(old.open(try rotating.seal(message)) == nil)  // sealed with the new key
        var tampered = try old.seal(message)
        tampered[tampered.count - 20] ^= 1
        #expect(old.open(tampered) == nil)
        #expect(old.open(Array("plain text datagram of some length".utf8)) == nil)
        #expect(throws: KeyringError.self) { try ClusterKeyring(text: "# no keys\n") }
        #expect(throws: KeyringError.self) { try ClusterKeyring(text: "c2hvcnQ=") }
    }

}

/// Real UDP on loopback.
@Suite struct GossipAgentTests {
    func freePort() throws -> Int {
        let socket = try DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        defer { try? socket.close().wait() }
        return socket.localAddress!.port!
    }

    func agent(_ id: String, port: Int, seeds: [MemberAddress], key: String) throws -> GossipAgent {
        var logger = Logger(label: "gossip-test")
        logger.logLevel = .critical
        let address = MemberAddress(host: "127.0.0.1", port: port)
        return GossipAgent(
            myself: Member(id: id, address: address, region: "eu", incarnation: UInt64(Date().timeIntervalSince1970 * 1000)),
            bind: address, seeds: seeds, keyring: try ClusterKeyring(text: key), logger: logger)
    }

    @Test func agentsFormAClusterOverUDPAndStrangersAreDropped() async throws {
        let key = ClusterKeyring.generateKeyText()
        let ports = try (0..<4).map { _ in try freePort() }
        let seed = MemberAddress(host: "127.0.0.1", port: ports[0])
        let agents = try (0..<3).map { try agent("n\($0)", port: ports[$0], seeds: [seed], key: key) }
        let stranger = try agent("intruder", port: ports[3], seeds: [seed], key: ClusterKeyring.generateKeyText())
        try await withThrowingTaskGroup(of: Void.self) { group in
            for agent in agents + [stranger] { group.addTask { try await agent.run() } }
            var formed = false
            for _ in 0..<100 where !formed {
                try await Task.sleep(for: .milliseconds(50))
                var counts: [Int] = []
                for agent in agents { counts.append(await agent.members.filter { $0.status == .alive }.count) }
                formed = counts.allSatisfy { $0 == 3 }
            }
            #expect(formed)
            #expect(agents.allSatisfy { $0.isJoined })
            #expect(!stranger.isJoined)
            // The intruder's join, sealed with another key, reaches the seed on its own schedule:
            // the cluster may form before its first attempt does.
            var droppedIntruder = false
            for _ in 0..<60 where !droppedIntruder {
                droppedIntruder = await agents[0].stats.dropped > 0
                if !droppedIntruder { try await Task.sleep(for: .milliseconds(50)) }
            }
            #expect(droppedIntruder)
            #expect(await agents[0].members.map(\.id) == ["n0", "n1", "n2"])

            await agents[0].publish(key: "health/n0", value: "ok")
            var spread = false
            for _ in 0..<40 where !spread {
                try await Task.sleep(for: .milliseconds(50))
                spread = await agents[2].stateEntries.contains { $0.key == "health/n0" && $0.value == "ok" }
            }
            #expect(spread)

            await agents[2].leave()  // graceful: the others see `left`, not `suspect`
            var gone = false
            for _ in 0..<40 where !gone {
                try await Task.sleep(for: .milliseconds(50))
                gone = await agents[1].members.first { $0.id == "n2" }?.status == .left
            }
            #expect(gone)
            group.cancelAll()
        }
    }
}
