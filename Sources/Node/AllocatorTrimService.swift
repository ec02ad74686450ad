import CAllocator
import Logging
import ServiceLifecycle

/// Gives memory the program freed back to the system. glibc's allocator keeps freed heap pages
/// for reuse, so after a burst (thousands of streams ending at once) the node's resident size
/// would stay at the burst's peak although nothing is in use. Every `interval`, when the
/// allocator holds more than `threshold` free, this trims its arenas: a later burst gets the
/// pages back from the system. Trimming walks the arenas (a few milliseconds for hundreds of
/// megabytes), so it runs only when there is something worth giving back.
struct AllocatorTrimService: Service {
    var interval: Duration = .seconds(10)
    var threshold = 8 << 20
    let logger: Logger

    func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            try? await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            Self.trimIfWorthIt(threshold: threshold, logger: logger)
        }
    }

    /// Trims when more than `threshold` bytes are free in the allocator; returns whether it did.
    @discardableResult
    static func trimIfWorthIt(threshold: Int, logger: Logger) -> Bool {
        let free = Int(signalbox_allocator_free_bytes())
        guard free > threshold else { return false }
        let released = signalbox_allocator_trim() == 1
        logger.debug("trimmed the allocator", metadata: ["free_bytes": "\(free)", "released": "\(released)"])
        return true
    }
}
