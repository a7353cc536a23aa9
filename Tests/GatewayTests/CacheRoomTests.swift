import Foundation
import Testing

@testable import Gateway

/// `CacheRoom`'s decisions, with plain numbers: what a new export may evict
/// and when it is refused.
struct CacheRoomTests {
    static func entry(_ n: Int, bytes: Int, pending: Int = 0, owners: Set<String> = [], finished: Bool = true, used: TimeInterval) -> CacheRoom.Entry {
        CacheRoom.Entry(
            runID: UUID(uuidString: String(format: "00000000-0000-0000-0000-%012d", n))!, bytes: bytes, pending: pending, owners: owners, finished: finished,
            lastUsed: Date(timeIntervalSince1970: used))
    }

    @Test func whatQueuedAndRunningExportsWillStillWriteIsSpokenFor() {
        // 900 free by the bytes, but a running export will write 600 more and a queued one 200.
        let entries = [Self.entry(1, bytes: 0, pending: 200, owners: ["b"], finished: false, used: 0), Self.entry(2, bytes: 100, pending: 600, owners: ["a"], finished: false, used: 0)]
        #expect(self.room.decide(estimate: 100, owner: nil, used: 100, entries: entries) == .fits(evicting: []))
        #expect(
            self.room.decide(estimate: 101, owner: nil, used: 100, entries: entries + [Self.entry(3, bytes: 1, owners: ["c"], used: 0)])
                == .fits(evicting: [UUID(uuidString: "00000000-0000-0000-0000-000000000003")!]))
        #expect(self.room.decide(estimate: 101, owner: nil, used: 100, entries: entries) == .full)
        // a's own running export counts against its share: 700 of 500.
        #expect(self.room.decide(estimate: 1, owner: "a", used: 100, entries: entries) == .overTokenShare(share: 500))
    }

    let room = CacheRoom(limit: 1000, sharePercent: 50)

    @Test func fitsWithoutEvictingWhenThereIsRoomOrUnpinnedFilesCanGoAsItWrites() {
        let entries = [Self.entry(1, bytes: 300, used: 1), Self.entry(2, bytes: 300, owners: ["a"], used: 2)]
        #expect(self.room.decide(estimate: 300, owner: nil, used: 600, entries: entries) == .fits(evicting: []))
        // 700 needed, 400 free, the unpinned 300 goes as the export writes.
        #expect(self.room.decide(estimate: 700, owner: nil, used: 600, entries: entries) == .fits(evicting: []))
        #expect(CacheRoom(limit: 0, sharePercent: 50).decide(estimate: 1 << 40, owner: "a", used: 1 << 41, entries: entries) == .fits(evicting: []))
    }

    @Test func pinnedFilesGoTheLargestHoldersFirstThenTheLeastRecentlyUsed() {
        let entries = [
            Self.entry(1, bytes: 200, owners: ["a"], used: 1),
            Self.entry(2, bytes: 300, owners: ["b"], used: 5),
            Self.entry(3, bytes: 200, owners: ["b"], used: 9),
            Self.entry(4, bytes: 200, owners: ["c"], finished: false, used: 0),
        ]
        // 900 used, 100 free: 200 more takes b's older file (b holds 500).
        #expect(self.room.decide(estimate: 200, owner: nil, used: 900, entries: entries) == .fits(evicting: [entries[1].runID]))
        // 700 takes both of b's and a's; the running export's bytes never go.
        #expect(self.room.decide(estimate: 800, owner: nil, used: 900, entries: entries) == .fits(evicting: [entries[1].runID, entries[2].runID, entries[0].runID]))
        #expect(self.room.decide(estimate: 900, owner: nil, used: 900, entries: entries) == .full)
    }

    @Test func aTokenPastItsShareEvictsItsOwnFilesOnlyAndIsRefusedWhenItsRunningExportsHoldIt() {
        let entries = [
            Self.entry(1, bytes: 300, owners: ["a"], used: 1),
            Self.entry(2, bytes: 100, owners: ["a", "b"], used: 0),
            Self.entry(3, bytes: 300, owners: ["b"], used: 0),
        ]
        // a holds 400 of its 500; 200 more: a's own file goes, not the shared one nor b's.
        #expect(self.room.decide(estimate: 200, owner: "a", used: 700, entries: entries) == .fits(evicting: [entries[0].runID]))
        #expect(self.room.decide(estimate: 501, owner: "a", used: 0, entries: []) == .overTokenShare(share: 500))
        let running = [Self.entry(5, bytes: 450, owners: ["a"], finished: false, used: 0)]
        #expect(self.room.decide(estimate: 100, owner: "a", used: 450, entries: running) == .overTokenShare(share: 500))
        #expect(self.room.decide(estimate: 1001, owner: nil, used: 0, entries: []) == .largerThanCache(limit: 1000))
    }

    @Test func theEstimateIsAboveTheFileForTheSeededTable() {
        // EXPLAIN on 3,000 seeded rows: width 90 for all nine columns; the file was 375,977 bytes.
        let estimate = CacheRoom.estimatedBytes(rows: 3000, width: 90, columns: 9)
        #expect(estimate >= 375_977 && estimate < 375_977 * 12 / 10)
        #expect(CacheRoom.estimatedBytes(rows: Int.max, width: 100, columns: 9) == Int.max)
    }
}
