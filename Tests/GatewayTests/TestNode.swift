import AsyncHTTPClient
import Foundation
import Gateway
import Hummingbird
import Ledger
import Node
import Logging
import NIOCore
import NIOHTTP1
import Providers
import ServiceLifecycle
import SignalboxCore
import SignalboxTestKit
import SimProvider
import Testing

/// A real router node and a real simulator, both on ephemeral loopback ports, with an in-memory
/// ledger holding one funded account and its key.
struct TestNode: Sendable {
    let url: String
    let simulatorURL: String
    let ledger: any LedgerStore
    let http: HTTPClient
    let key: String
    let credit: CreditLeases
    /// The node's readiness (what `/readyz` reports; the drain turns it off).
    let readiness: Readiness
    let account = "acct"

    /// Starts a node — the same services `signalbox serve` runs — on an in-memory SQLite ledger
    /// (or, with `postgres`, a fresh PostgreSQL database), funds one account with `credits`,
    /// runs `body`, and shuts the node down gracefully.
    static func with(
        credits: String = "10",
        simulator simulatorConfiguration: SimulatorConfiguration = .init(
            firstTokenDelay: .milliseconds(5), interTokenDelay: .milliseconds(1)),
        configure: @escaping @Sendable (inout GatewayConfiguration) -> Void = { _ in },
        providersWithoutKeys: Set<String> = [],
        postgres: Bool = false,
        /// Wraps the ledger in an `UnreachableLedger` (as `node.ledger`) that a test can cut off.
        cuttable: Bool = false,
        _ body: @Sendable (TestNode) async throws -> Void
    ) async throws {
        let setup = Setup(
            credits: credits, simulator: simulatorConfiguration, configure: configure, providersWithoutKeys: providersWithoutKeys)
        if postgres {
            try await TestDatabase.withFreshDatabase { url in try await setup.run(ledger: try .postgres(url: url), body) }
        } else if cuttable {
            let ledger = UnreachableLedger(try await SQLiteLedgerStore.open(path: nil))
            do {
                try await setup.run(ledger: .store(ledger), body)
            } catch {
                try? await ledger.close()
                throw error
            }
            try await ledger.close()
        } else {
            try await setup.run(ledger: .sqlite(path: nil), body)
        }
    }

    /// How a test wants its node.
    struct Setup: Sendable {
        var credits: String
        var simulator: SimulatorConfiguration
        var configure: @Sendable (inout GatewayConfiguration) -> Void
        var providersWithoutKeys: Set<String>

        func run(ledger location: LedgerLocation, _ body: @Sendable (TestNode) async throws -> Void) async throws {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("signalbox-test-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            let http = HTTPClient(eventLoopGroupProvider: .singleton)

            let (simPorts, simPort) = AsyncStream<Int>.makeStream()
            let simApp = Application(
                router: Simulator(configuration: simulator).buildRouter(),
                configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                onServerRunning: { simPort.yield($0.localAddress!.port!) }, logger: logger)
            let simGroup = ServiceGroup(configuration: .init(services: [simApp], logger: logger))
            let failure = await withTaskGroup(of: Void.self) { group -> (any Error)? in
                group.addTask {
                    try? await simGroup.run()
                    simPort.finish()
                }
                var ports = simPorts.makeAsyncIterator()
                guard let port = await ports.next() else { return TestNodeError.simulatorDidNotStart }
                let failure = await runNode(
                    simulatorURL: "http://127.0.0.1:\(port)", ledger: location, scratch: scratch, http: http, body)
                await simGroup.triggerGracefulShutdown()
                return failure
            }
            try await http.shutdown()
            if let failure { throw failure }
        }

        /// Runs the node until `body` is done, then shuts it down; returns the first error.
        func runNode(
            simulatorURL: String, ledger location: LedgerLocation, scratch: String, http: HTTPClient,
            _ body: @Sendable (TestNode) async throws -> Void
        ) async -> (any Error)? {
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            let configuration: NodeConfiguration
            do { configuration = try nodeConfiguration(simulatorURL: simulatorURL, ledger: location, scratch: scratch) } catch {
                return error
            }
            let (servingNodes, serving) = AsyncStream<ServingNode>.makeStream()
            let nodeGroup = ServiceGroup(
                configuration: .init(services: [SignalboxNode(configuration, logger: logger) { serving.yield($0) }], logger: logger))
            return await withTaskGroup(of: (any Error)?.self) { group -> (any Error)? in
                group.addTask {
                    defer { serving.finish() }
                    do { try await nodeGroup.run() } catch { return error }
                    return nil
                }
                var nodes = servingNodes.makeAsyncIterator()
                let started = await nodes.next()
                var bodyFailure: (any Error)?
                if let started {
                    do {
                        let node = TestNode(
                            url: "http://127.0.0.1:\(started.port)", simulatorURL: simulatorURL, ledger: started.ledger,
                            http: http, key: try await fundAccount(in: started.ledger), credit: started.credit,
                            readiness: started.readiness)
                        try await body(node)
                    } catch {
                        bodyFailure = error
                    }
                }
                await nodeGroup.triggerGracefulShutdown()
                let nodeFailure = await group.next() ?? nil
                return bodyFailure ?? nodeFailure ?? (started == nil ? TestNodeError.stoppedBeforeServing : nil)
            }
        }

        func nodeConfiguration(simulatorURL: String, ledger: LedgerLocation, scratch: String) throws -> NodeConfiguration {
            var catalog = try Catalog.shipped()
            catalog.pointAllProviders(at: simulatorURL)
            var gateway = GatewayConfiguration()
            gateway.port = 0
            gateway.timeouts = UpstreamTimeouts(connect: .seconds(2), firstToken: .seconds(2), stall: .seconds(1))
            // Tests name the provider they expect to serve: a fixed primary keeps that stable.
            gateway.loadBalancing = .catalogOrder
            configure(&gateway)
            let providerKeys = Dictionary(
                uniqueKeysWithValues: catalog.providers.keys.filter { !providersWithoutKeys.contains($0) }.map { ($0, "sk-test") })
            return NodeConfiguration(
                gateway: gateway, catalog: catalog, providerKeys: providerKeys, ledger: ledger,
                spoolPath: scratch + "/settlements.spool")
        }

        /// The test account, its credit and its key; returns the key.
        func fundAccount(in ledger: any LedgerStore) async throws -> String {
            let key = APIKeyFormat.generate()
            try await ledger.createAccount(id: "acct", name: "Test")
            if let amount = Money(decimal: credits), amount > .zero {
                try await ledger.post([
                    TransferRequest(
                        idempotencyKey: "grant", debit: Billing.SystemAccount.grants, credit: "acct", amount: amount, kind: .grant)
                ])
            }
            try await ledger.insertKey(
                KeyRecord(
                    id: "key-1", accountID: "acct", hash: APIKeyFormat.hash(key), label: APIKeyFormat.label(key), name: "test"))
            return key
        }
    }

    enum TestNodeError: Error { case simulatorDidNotStart, stoppedBeforeServing }

    struct Reply {
        var status: Int
        var headers: [(String, String)]
        var body: String
        var json: JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(body.utf8)) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    func request(
        _ path: String, method: HTTPMethod = .POST, body: String? = nil, key: String? = nil,
        authorized: Bool = true
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        if authorized { request.headers.add(name: "Authorization", value: "Bearer \(key ?? self.key)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await http.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return Reply(
            status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) },
            body: String(buffer: collected))
    }

    func chat(model: String = "openai/gpt-4o-mini", stream: Bool = false, extra: String = "", key: String? = nil) async throws -> Reply {
        try await request(
            "/api/v1/chat/completions",
            body: """
                {"model": "\(model)", "stream": \(stream), "max_tokens": 50,
                 "messages": [{"role": "user", "content": "Hello from the gateway tests"}]\(extra)}
                """, key: key)
    }

    /// Stores an operator key with `role` for the node's account and returns its secret.
    func makeAdminKey(role: AdminRole = .admin, id: String = "admin") async throws -> String {
        let admin = APIKeyFormat.generate()
        try await ledger.insertKey(
            KeyRecord(
                id: id, accountID: account, hash: APIKeyFormat.hash(admin),
                label: APIKeyFormat.label(admin), name: id, adminRole: role))
        return admin
    }

    func fault(_ json: String) async throws {
        var request = HTTPClientRequest(url: simulatorURL + "/_sim/faults")
        request.method = .POST
        request.body = .bytes(ByteBuffer(string: json))
        let response = try await http.execute(request, timeout: .seconds(5))
        #expect(response.status == .ok)
        _ = try await response.body.collect(upTo: 1 << 16)
    }

    func simulatorRequests(_ provider: String) async throws -> Int {
        let response = try await http.execute(HTTPClientRequest(url: simulatorURL + "/_sim/stats"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1 << 20)
        let json = try JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView))
        return json["providers"]?[provider]?["requests"]?.intValue ?? 0
    }

    /// The SSE `data:` payloads of a stream, and whether it carried keep-alive comments.
    static func events(_ body: String) -> [String] {
        body.components(separatedBy: "\n\n").compactMap { event in
            event.hasPrefix("data: ") ? String(event.dropFirst(6)) : nil
        }
    }

    /// The account's balance once the node has nothing reserved and has given its lease back:
    /// then `available` equals `balance` unless a hold was left behind.
    func settledBalance() async throws -> AccountBalance {
        for lease in await credit.leases { #expect(lease.reserved == .zero, "credit still reserved for \(lease.account)") }
        await credit.upkeep(closingAll: true)
        return try await ledger.balance(account: account)
    }

    func generation(_ id: String) async throws -> GenerationRecord? {
        for _ in 0..<50 {
            if let record = try await ledger.generation(id: id) { return record }
            try await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }
}
