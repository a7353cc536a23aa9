import Foundation

/// Finished exports kept on disk, by SHA-256, so ranges can be checked
/// against the bytes at their offsets without holding files in memory.
/// Each file is fetched once (whole, verified) however many sessions ask at
/// the same time; the folder holds at most `capacity` bytes, least recently
/// used files go first (a reader that has one open keeps its bytes).
actor FinishedFiles {
    private struct Entry {
        let path: String
        let size: Int
        var lastUse: UInt64
    }

    let directory: String
    let capacity: Int
    private var entries: [String: Entry] = [:]
    /// Sessions waiting for a fetch another session is doing.
    private var waiting: [String: [CheckedContinuation<Void, Never>]] = [:]
    private var used = 0
    private var clock: UInt64 = 0

    init(directory: String, capacity: Int) {
        self.directory = directory
        self.capacity = capacity
    }

    /// An open descriptor of the verified file for `digest`, fetched into the
    /// folder by `fetch` (which returns whether the bytes were right) when it
    /// is not there yet. Nil when it is larger than the folder may hold, or
    /// the fetch failed (the failure was counted by `fetch`).
    func open(_ digest: Digest, fetch: @Sendable (LocalFile) async -> Bool) async -> LocalFile? {
        guard digest.size <= self.capacity else { return nil }
        // Another session may be fetching it (or have evicted it) while this one waited.
        while true {
            if let entry = self.entries[digest.sha256] {
                self.clock += 1
                self.entries[digest.sha256]?.lastUse = self.clock
                return try? await LocalFile.openForReading(entry.path)
            }
            guard self.waiting[digest.sha256] != nil else { break }
            await withCheckedContinuation { self.waiting[digest.sha256, default: []].append($0) }
        }
        self.waiting[digest.sha256] = []
        defer {
            for waiter in self.waiting.removeValue(forKey: digest.sha256) ?? [] { waiter.resume() }
        }
        await self.makeRoom(for: digest.size)
        // Fetches in progress hold room that cannot be evicted yet.
        guard self.used + digest.size <= self.capacity else { return nil }
        self.used += digest.size
        let path = "\(self.directory)/\(digest.sha256).csv"
        let partial = path + ".partial"
        await LocalFile.remove(partial)
        guard let file = try? await LocalFile.create(partial) else {
            self.used -= digest.size
            return nil
        }
        let good = await fetch(file)
        file.close()
        guard good, (try? await LocalFile.rename(partial, to: path)) != nil else {
            await LocalFile.remove(partial)
            self.used -= digest.size
            return nil
        }
        self.clock += 1
        self.entries[digest.sha256] = Entry(path: path, size: digest.size, lastUse: self.clock)
        return try? await LocalFile.openForReading(path)
    }

    private func makeRoom(for size: Int) async {
        while self.used + size > self.capacity, let oldest = self.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            self.entries[oldest.key] = nil
            self.used -= oldest.value.size
            await LocalFile.remove(oldest.value.path)
        }
    }

    /// Removes every file and the folder (at the end of the run).
    func removeAll() async {
        for entry in self.entries.values { await LocalFile.remove(entry.path) }
        self.entries = [:]
        self.used = 0
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}
