import Foundation

/// The bytes the cache holds on disk, counted as they come and go, as a pure
/// ledger: events go in, and what to do on disk comes out (which file no one
/// holds any more). The owner keeps it under its lock and does the I/O.
///
/// Three kinds of bytes count:
/// - **partial**: what each producer (an export run, a gzip producer) has
///   reserved for the file it is writing, from its first write until it
///   publishes or discards it;
/// - **published**: each named file once, however many runs hold it (the same
///   bytes have the same name);
/// - **detached**: a file that lost its name (deleted or evicted) while a
///   reader still had it open: its blocks stay on disk until the last reader
///   closes it, so its bytes count until then.
///
/// Every event is defined whatever came before: releasing or closing what is
/// not there changes nothing.
public struct CacheLedger: Sendable {
    /// A reader's hold on an open file, to give back with `close`.
    public struct OpenToken: Hashable, Sendable {
        fileprivate let entry: Int
    }

    private struct Entry {
        let id: Int
        let size: Int
        /// Runs that hold it; the file is deleted when none is left.
        var holders: Int
        /// Readers that have it open.
        var opens: Int
    }

    private var files: [String: Entry] = [:]
    private var pathOfEntry: [Int: String] = [:]
    private var detached: [Int: (size: Int, opens: Int)] = [:]
    private var partial: [UUID: Int] = [:]
    private var nextEntryID = 0
    /// Every byte counted: partial, published and detached.
    public private(set) var totalBytes = 0

    public init() {}

    /// Bytes of files being written.
    public var partialBytes: Int { self.partial.values.reduce(0, +) }
    /// Bytes of deleted files still open for a reader.
    public var detachedBytes: Int { self.detached.values.reduce(0) { $0 + $1.size } }

    // MARK: Producers

    /// Reserves `bytes` more for `producer`'s partial file, if that stays
    /// within `limit` (0: no limit). False changes nothing. Zero bytes asks
    /// only whether the cache is within its limit now.
    public mutating func reserve(_ bytes: Int, for producer: UUID, limit: Int) -> Bool {
        if limit > 0, self.totalBytes + max(0, bytes) > limit { return false }
        guard bytes > 0 else { return true }
        self.partial[producer, default: 0] += bytes
        self.totalBytes += bytes
        return true
    }

    /// `bytes` of one producer's reservation become another's: a parallel
    /// export's spool copied into its file. Never refused: the bytes were
    /// reserved once already (any part that was not is added).
    public mutating func transfer(_ bytes: Int, from source: UUID, to target: UUID) {
        guard bytes > 0 else { return }
        let moved = min(bytes, self.partial[source] ?? 0)
        if moved > 0 { self.partial[source, default: 0] -= moved }
        self.partial[target, default: 0] += bytes
        self.totalBytes += bytes - moved
    }

    /// The producer's partial file is gone: discarded, or published (then
    /// `hold` counts the named file).
    public mutating func endPartial(_ producer: UUID) {
        guard let bytes = self.partial.removeValue(forKey: producer) else { return }
        self.totalBytes -= bytes
    }

    // MARK: Holders

    /// One more run holds this published file; a file not yet counted starts to count.
    public mutating func hold(_ file: PublishedFile) {
        if var entry = self.files[file.path] {
            entry.holders += 1
            self.files[file.path] = entry
            return
        }
        let id = self.nextEntryID
        self.nextEntryID += 1
        self.files[file.path] = Entry(id: id, size: file.size, holders: 1, opens: 0)
        self.pathOfEntry[id] = file.path
        self.totalBytes += file.size
    }

    /// True while some run holds the file at `path`.
    public func isHeld(_ path: String) -> Bool { self.files[path] != nil }

    /// The size of the held file at `path`, if held.
    public func size(of path: String) -> Int? { self.files[path]?.size }

    /// How many runs hold the file at `path`.
    public func holders(of path: String) -> Int { self.files[path]?.holders ?? 0 }

    /// One run lets go of the file. True when none is left: the caller deletes
    /// it. Its bytes stop counting now, or, if a reader has it open, when the
    /// last reader closes it.
    public mutating func release(_ path: String) -> Bool {
        guard var entry = self.files[path] else { return false }
        entry.holders -= 1
        guard entry.holders <= 0 else {
            self.files[path] = entry
            return false
        }
        self.files[path] = nil
        self.pathOfEntry[entry.id] = nil
        if entry.opens > 0 {
            self.detached[entry.id] = (entry.size, entry.opens)
        } else {
            self.totalBytes -= entry.size
        }
        return true
    }

    // MARK: Readers

    /// A reader opens the held file at `path`; nil when no run holds it.
    public mutating func open(_ path: String) -> OpenToken? {
        guard var entry = self.files[path] else { return nil }
        entry.opens += 1
        self.files[path] = entry
        return OpenToken(entry: entry.id)
    }

    /// A reader closed its file. The last reader of a deleted file frees its bytes.
    public mutating func close(_ token: OpenToken) {
        if let path = self.pathOfEntry[token.entry], var entry = self.files[path] {
            entry.opens = max(0, entry.opens - 1)
            self.files[path] = entry
        } else if var gone = self.detached[token.entry] {
            gone.opens -= 1
            if gone.opens <= 0 {
                self.detached[token.entry] = nil
                self.totalBytes -= gone.size
            } else {
                self.detached[token.entry] = gone
            }
        }
    }
}
