import Foundation

/// Whether a new export fits in the cache, and which finished files must go
/// to make room for it: a pure decision over a snapshot of the cache, made
/// before the export is acknowledged (`ExportManager.makeRoom`).
///
/// Without it, a cache full of files that exports still referred to (kept
/// for EXPORT_TTL, a day by default) answered every new export `202` and then
/// failed it for want of room, for a day. Now, in order:
///
/// 1. An export estimated larger than the whole cache, or than its token's
///    share, is refused (507).
/// 2. A token past its share (`TOKEN_CACHE_SHARE` percent) makes room from
///    its own files only, least recently used first, never another's; if its
///    running exports alone hold its share, it is refused.
/// 3. Room in the whole cache, less what queued and running exports are
///    still expected to write: files no export refers to are evicted as the
///    export writes (`ExportManager.reserve`), so they count as room now;
///    past them, finished files that exports refer to go too, those of the
///    token that holds the most bytes first, least recently used first
///    within it (their exports answer 410 `export_evicted`). What running
///    exports are writing is never evicted: if that leaves too little, 507.
struct CacheRoom {
    /// One run as the cache sees it.
    struct Entry: Equatable {
        let runID: UUID
        /// Bytes of its files (finished) or written so far (running).
        let bytes: Int
        /// Bytes it is still expected to write (queued or running: its
        /// estimate less what it has written), which are spoken for: two
        /// admissions in a row must not both count on the same room.
        var pending = 0
        /// The tokens of the exports that refer to it (none: unpinned).
        let owners: Set<String>
        /// Finished with its files in the cache (running ones are not evictable).
        let finished: Bool
        let lastUsed: Date
    }

    enum Decision: Equatable {
        /// It fits once these runs' files are evicted (their exports expire as evicted).
        case fits(evicting: [UUID])
        /// Estimated larger than CACHE_MAX_BYTES.
        case largerThanCache(limit: Int)
        /// Estimated larger than the token's share, or its running exports hold it.
        case overTokenShare(share: Int)
        /// Running exports and their files hold the cache.
        case full
    }

    let limit: Int
    let sharePercent: Int

    /// - Parameters:
    ///   - estimate: the new export's bytes, as estimated.
    ///   - owner: its token (nil: no tokens, one tenant).
    ///   - used: bytes the cache counts now (files, partial files, files deleted but still open).
    func decide(estimate: Int, owner: String?, used: Int, entries: [Entry]) -> Decision {
        guard self.limit > 0 else { return .fits(evicting: []) }
        if estimate > self.limit { return .largerThanCache(limit: self.limit) }
        var evicting: [UUID] = []
        var freed = 0
        if let owner {
            let share = self.limit / 100 * self.sharePercent + self.limit % 100 * self.sharePercent / 100
            if estimate > share { return .overTokenShare(share: share) }
            var mine = entries.filter { $0.owners.contains(owner) }.reduce(0) { $0 + $1.bytes + $1.pending }
            let own = entries.filter { $0.finished && $0.owners == [owner] }.sorted { $0.lastUsed < $1.lastUsed }
            for entry in own where mine + estimate > share {
                evicting.append(entry.runID)
                freed += entry.bytes
                mine -= entry.bytes
            }
            if mine + estimate > share { return .overTokenShare(share: share) }
        }
        let unpinned = entries.filter { $0.finished && $0.owners.isEmpty }.reduce(0) { $0 + $1.bytes }
        let pending = entries.reduce(0) { $0 + $1.pending }
        var room = self.limit - used - pending + freed + unpinned
        guard room < estimate else { return .fits(evicting: evicting) }
        // The token that holds the most bytes pays first.
        var bytesByOwner: [String: Int] = [:]
        for entry in entries {
            for owner in entry.owners { bytesByOwner[owner, default: 0] += entry.bytes }
        }
        func weight(_ entry: Entry) -> Int { entry.owners.map { bytesByOwner[$0] ?? 0 }.max() ?? 0 }
        let pinned = entries.filter { $0.finished && !$0.owners.isEmpty && !evicting.contains($0.runID) }
            .sorted { weight($0) != weight($1) ? weight($0) > weight($1) : $0.lastUsed < $1.lastUsed }
        for entry in pinned where room < estimate {
            evicting.append(entry.runID)
            room += entry.bytes
        }
        return room < estimate ? .full : .fits(evicting: evicting)
    }

    /// A new export's bytes from the planner's estimate of its rows and
    /// their width (`EXPLAIN`'s top line): the width is PostgreSQL's binary
    /// size, which CSV exceeds by its delimiters, quotes and the text form of
    /// numbers and timestamps, so 5 bytes a column are added. Measured on
    /// 3,000 seeded rows: all nine columns, width 90, estimated 405,000
    /// bytes for a file of 375,977 (8 % over: better a little high, which
    /// makes room a little early, than low, which acknowledges an export
    /// that then fails for room); `id` alone, width 8, 39,000 for 13,896.
    static func estimatedBytes(rows: Int, width: Int, columns: Int) -> Int {
        let (product, overflow) = max(0, rows).multipliedReportingOverflow(by: max(0, width) + 5 * max(1, columns))
        return overflow ? Int.max : product
    }
}
