import ArgumentParser
import Hummingbird
import Logging
import SimProvider

/// `signalbox sim-provider`: the simulated upstream on its own, for benchmarks and clusters.
struct SimProviderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim-provider", abstract: "Run the simulated upstream provider.")

    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(help: "Port to listen on.") var port: Int = 8091
    @Option(help: "Milliseconds before the first token.") var firstTokenMs: Int = 20
    @Option(help: "Milliseconds between streamed tokens.") var interTokenMs: Int = 2
    @Option(help: "Tokens in every text answer (still cut at max_tokens); by default the prompt picks 8 to 31.")
    var answerTokens: Int?

    func run() async throws {
        let simulator = Simulator(
            configuration: .init(
                firstTokenDelay: .milliseconds(firstTokenMs), interTokenDelay: .milliseconds(interTokenMs),
                answerTokens: answerTokens))
        let app = Application(
            router: simulator.buildRouter(),
            configuration: .init(address: .hostname(host, port: port), serverName: "signalbox-sim"),
            onServerRunning: { _ in print("Simulated provider listening on http://\(host):\(port)") },
            logger: Logger(label: "signalbox.sim"))
        try await app.runService()
    }
}
