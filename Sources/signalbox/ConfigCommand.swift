import ArgumentParser
import Foundation
import SignalboxCore

/// `signalbox config`: check a configuration file without starting a node, and print the
/// table of its keys that Docs/configuration.md shows.
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Check configuration files.", subcommands: [Check.self, Docs.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a configuration file: JSON, known keys only, value types, and the catalog it makes.")
        @Argument(help: "The configuration file.") var file: String

        func run() throws {
            let config = try ConfigFile.load(path: file)
            var catalog = try Catalog.shipped()
            catalog.merge(providers: config.providers ?? [], models: config.models ?? [])
            do { try catalog.validate() } catch { throw ConfigFileError("Configuration file \(file): \(error)") }
            _ = try config.traceSettings(environment: ProcessInfo.processInfo.environment)
            _ = try config.alertSettings(environment: ProcessInfo.processInfo.environment)
            for warning in ConfigSchema.unknownEnvironment(ProcessInfo.processInfo.environment) { print("warning: \(warning)") }
            print(
                "\(file) is valid: \(config.providers?.count ?? 0) provider(s) and \(config.models?.count ?? 0) model(s) added or "
                    + "replaced; the catalog has \(catalog.providers.count) providers and \(catalog.models.count) models.")
        }
    }

    struct Docs: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the configuration keys as the Markdown table of Docs/configuration.md.")
        func run() { print(ConfigSchema.markdownTable) }
    }
}
