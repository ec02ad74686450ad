import Foundation
import GossipSimulation

// The byte-accurate SWIM simulation at production size (default 1,000 members; run it in release:
// `swift run -c release gossip-sim [size]`). Prints the figures Docs/cluster.md quotes and exits 1
// when they miss the bounds the tests hold them to.
let size = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 1000
let started = Date()
let report = ScaleScenario(size: size).run()
print(report)
print(String(format: "(simulated in %.0f s of real time)", Date().timeIntervalSince(started)))
exit(ScaleScenario.acceptable(report) ? 0 : 1)
