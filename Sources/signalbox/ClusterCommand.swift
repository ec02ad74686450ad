import ArgumentParser
import AsyncHTTPClient
import Foundation
import Gossip
import NIOCore

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Cluster tools.",
        subcommands: [Keygen.self, Members.self, KeyringCommand.self])

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new cluster key. To rotate keys without downtime, see Docs/cluster.md.")
        @Option(help: "Key file to write (mode 0600).") var out: String
        @Flag(help: "Replace the file if it exists (the nodes holding the old key can no longer talk to the ones with the new).")
        var force = false

        func run() async throws {
            if FileManager.default.fileExists(atPath: out) && !force {
                throw ValidationError(
                    "\(out) exists; it may hold the key a running cluster uses. Pass --force to replace it, "
                        + "or write the new key elsewhere and rotate it in (Docs/cluster.md)")
            }
            let text =
                "# Signalbox cluster key (AES-256-GCM). First line: the key nodes send with; every line is accepted.\n"
                + ClusterKeyring.generateKeyText() + "\n"
            guard FileManager.default.createFile(atPath: out, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
                throw ValidationError("Cannot write \(out)")
            }
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: out)
            let keyID = try ClusterKeyring(text: text).primaryKeyID
            print("Wrote a new cluster key to \(out) (key id \(keyID))")
        }
    }

    /// Where the admin API is and the key to call it with.
    struct NodeOptions: ParsableArguments {
        @Option(
            name: .customLong("url"),
            help: "A node's base URL; repeat it to see several nodes' own views (default: SIGNALBOX_URL or http://127.0.0.1:8080).")
        var urls: [String] = []
        @Option(help: "The admin key (default: SIGNALBOX_ADMIN_KEY).") var adminKey: String?
        @Flag(help: "Print the JSON the admin API returned.") var json = false

        var nodes: [String] {
            urls.isEmpty ? [ProcessInfo.processInfo.environment["SIGNALBOX_URL"] ?? "http://127.0.0.1:8080"] : urls
        }

        /// GETs `path` from one node with the admin key; the parsed JSON object.
        func get(_ path: String, from base: String) async throws -> [String: Any] {
            guard let key = adminKey ?? ProcessInfo.processInfo.environment["SIGNALBOX_ADMIN_KEY"] else {
                throw ValidationError("give --admin-key or set SIGNALBOX_ADMIN_KEY")
            }
            var request = HTTPClientRequest(url: base.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/api/v1" + path)
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
            let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] ?? [:]
            guard response.status.code == 200 else {
                let message = (object["error"] as? [String: Any])?["message"] as? String ?? "HTTP \(response.status.code)"
                throw ValidationError("\(base): \(message)")
            }
            if json { print(String(decoding: Data(buffer: body), as: UTF8.self)) }
            return object
        }
    }

    struct Members: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each node's own view of the cluster's members.")
        @OptionGroup var options: NodeOptions

        func run() async throws {
            for base in options.nodes {
                let members = try await options.get("/admin/cluster/members", from: base)["data"] as? [[String: Any]] ?? []
                if options.json { continue }
                let me = members.first { $0["self"] as? Bool == true }?["id"] as? String ?? "?"
                print("\(base) (node \(me)) sees \(members.count) members:")
                let rows = members.map { member -> [String] in
                    [
                        (member["id"] as? String ?? "") + (member["self"] as? Bool == true ? " *" : ""), member["region"] as? String ?? "",
                        member["address"] as? String ?? "", member["state"] as? String ?? "", "\(member["incarnation"] ?? "")",
                        member["sends_with_key"] as? String ?? "", (member["clock_offset_ms"] as? Int).map { "\($0) ms" } ?? "-",
                    ]
                }
                printTable(["ID", "REGION", "GOSSIP", "STATE", "INCARNATION", "KEY", "CLOCK OFFSET"], rows)
            }
        }
    }

    struct KeyringCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "keyring", abstract: "The cluster key ring as nodes use it.",
            subcommands: [Status.self])

        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Which key each node sends with and accepts, and what it last saw each peer send with.")
            @OptionGroup var options: NodeOptions

            func run() async throws {
                for base in options.nodes {
                    let data = try await options.get("/admin/cluster/keyring", from: base)["data"] as? [String: Any] ?? [:]
                    if options.json { continue }
                    let accepts = (data["accepts"] as? [String] ?? []).joined(separator: ", ")
                    print(
                        "\(base) (node \(data["node"] as? String ?? "?")): sends with \(data["sends_with"] as? String ?? "?"), accepts \(accepts)"
                    )
                    let peers = (data["peers_send_with"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }
                    printTable(
                        ["PEER", "SENDS WITH", "ACCEPTED HERE"],
                        peers.map { [$0.key, $0.value, accepts.contains($0.value) ? "yes" : "NO"] })
                }
            }
        }
    }
}

private func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    for row in [header] + rows {
        print(
            "  "
                + row.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(
                    separator: "  "))
    }
}
