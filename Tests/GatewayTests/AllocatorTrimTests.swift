import Foundation
import Logging
import Testing

@testable import Node
import CAllocator

/// After a burst, the node's memory goes back to the system instead of staying at the peak.
@Suite struct AllocatorTrimTests {
    @Test func memoryFreedAfterABurstIsGivenBackToTheSystem() throws {
        // 256 MiB in 16 KiB blocks: below glibc's mmap threshold, so freeing them leaves the
        // pages in the heap, resident, as thousands of ended streams do.
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<16_384 {
            let block = try #require(malloc(16 << 10))
            memset(block, 1, 16 << 10)  // touch every page
            blocks.append(block)
        }
        // One block in sixteen stays in use, as a node's long-lived objects do among those of
        // ended streams: no stretch of the heap is wholly free, so free() alone gives nothing back.
        var kept: [UnsafeMutableRawPointer] = []
        defer { for block in kept { free(block) } }
        for (index, block) in blocks.enumerated() {
            if index % 16 == 0 { kept.append(block) } else { free(block) }
        }
        blocks.removeAll()
        let before = try Self.residentBytes()
        #expect(signalbox_allocator_free_bytes() > 200 << 20, "the allocator holds what was freed")
        #expect(AllocatorTrimService.trimIfWorthIt(threshold: 32 << 20, logger: Logger(label: "test")))
        let after = try Self.residentBytes()
        #expect(before - after > 64 << 20, "resident \(before >> 20) MiB before the trim, \(after >> 20) MiB after")
        #expect(!AllocatorTrimService.trimIfWorthIt(threshold: Int.max, logger: Logger(label: "test")), "nothing is worth a trim")
    }

    static func residentBytes() throws -> Int {
        let fields = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
