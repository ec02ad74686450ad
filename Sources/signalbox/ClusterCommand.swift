import ArgumentParser
import Foundation
import Gossip

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster", abstract: "Cluster tools.",
                                                    subcommands: [Keygen.self])

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new cluster key (replacing the file). To rotate keys without downtime, see Docs/cluster.md.")
        @Option(help: "Key file to write (mode 0600).") var out: String

        func run() async throws {
            let text = "# Signalbox cluster key (AES-256-GCM). First line: the key nodes send with; every line is accepted.\n"
                + ClusterKeyring.generateKeyText() + "\n"
            guard FileManager.default.createFile(atPath: out, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("Cannot write \(out)")
            }
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: out)
            print("Wrote a new cluster key to \(out)")
        }
    }
}
