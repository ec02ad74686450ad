import Foundation
import Ledger
import SignalboxCore
import Testing

@testable import Gateway

@Suite("The key cache stays bounded")
struct KeyCacheTests {
    func record(_ n: Int) -> KeyRecord {
        KeyRecord(id: "key-\(n)", accountID: "a", hash: "h\(n)", label: "sk-…", name: "k", isAdmin: false)
    }

    @Test("a flood of distinct unknown keys never holds more than the bound, and a miss is forgotten after its lifetime")
    func missesAreBoundedAndShortLived() {
        var cache = KeyCache(maxFound: 10, maxMissing: 100, missingLifetime: 1)
        let start = Date(timeIntervalSince1970: 1_000)
        for n in 0..<100_000 {
            cache.store("bogus-\(n)", record: nil, now: start.addingTimeInterval(Double(n) / 100_000))
            #expect(cache.missing.count <= 100)
        }
        #expect(cache.lookup("bogus-99999", now: start.addingTimeInterval(1.5)) != nil)
        #expect(cache.lookup("bogus-99999", now: start.addingTimeInterval(2.1)) == nil)
    }

    @Test("found keys past the bound push out the ones fetched longest ago; a key found clears its miss")
    func foundKeysAreBounded() {
        var cache = KeyCache(maxFound: 10, maxMissing: 100, missingLifetime: 1)
        let start = Date(timeIntervalSince1970: 1_000)
        cache.store("h0", record: nil, now: start)
        for n in 0..<25 { cache.store("h\(n)", record: record(n), now: start.addingTimeInterval(Double(n))) }
        #expect(cache.found.count <= 10)
        #expect(cache.missing["h0"] == nil)
        #expect(cache.lookup("h24", now: start)?.record?.id == "key-24")
        #expect(cache.lookup("h0", now: start) == nil)
    }
}
