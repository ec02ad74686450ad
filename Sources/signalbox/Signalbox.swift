import ArgumentParser

@main
struct Signalbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signalbox",
        abstract: "A self-hosted, OpenAI-compatible LLM router.",
        subcommands: [
            Serve.self, SimProviderCommand.self, MigrateCommand.self, AccountsCommand.self, KeysCommand.self, CreditsCommand.self,
            LedgerCommand.self, AuditCommand.self, ClusterCommand.self, ConfigCommand.self, OpenAPICommand.self,
        ]
    )
}
