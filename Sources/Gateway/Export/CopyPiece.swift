import Cache
import Synchronization

/// Rows read from PostgreSQL by every piece of one export (COPY messages:
/// the header counts as one), for its progress.
final class RowCounter: Sendable {
    private let count = Atomic<Int>(0)
    func add(_ n: Int) { self.count.add(n, ordering: .relaxed) }
    var value: Int { self.count.load(ordering: .relaxed) }
}

/// One thread's reading of COPY output into a destination (the export's
/// file, or a spool file for a later piece): rows gathered in a staging
/// buffer and written in large blocks, CR LF line ends when asked, room
/// reserved under CACHE_MAX_BYTES before every write, and a stop looked
/// for at every write and every idle moment. Not thread-safe: one owner.
final class CopyPiece {
    /// How much to gather before writing; also the most a reader can lag
    /// behind what PostgreSQL has sent while rows are flowing.
    static let stagingSize = 256 * 1024
    /// An idle moment flushes once this much is staged (see `idle`) …
    static let idleFlushBytes = 64 * 1024
    /// … or once the oldest staged bytes have waited this long.
    static let idleFlushDelay: Duration = .milliseconds(5)

    private let staging = StagingBuffer(capacity: CopyPiece.stagingSize)
    private let crlf: Bool
    /// Writes bytes that complete this many more records.
    private let write: (UnsafeRawBufferPointer, Int) throws -> Void
    private let reserve: (Int) -> Bool
    private let shouldStop: () -> Bool
    private let rows: RowCounter
    /// After each write: the place to report progress.
    private let written: () -> Void
    private let clock = ContinuousClock()
    /// When the bytes now staged were first seen waiting for an idle flush.
    private var stagedSince: ContinuousClock.Instant?
    /// Messages received but not yet added to `rows` (added at each flush).
    private var pendingMessages = 0
    /// Nothing written yet: the first rows are written at the first idle
    /// moment, without the 5 ms wait, for the time to first byte.
    private var first = true

    init(
        crlf: Bool,
        rows: RowCounter,
        write: @escaping (UnsafeRawBufferPointer, Int) throws -> Void,
        reserve: @escaping (Int) -> Bool,
        shouldStop: @escaping () -> Bool,
        written: @escaping () -> Void = {}
    ) {
        self.crlf = crlf
        self.rows = rows
        self.write = write
        self.reserve = reserve
        self.shouldStop = shouldStop
        self.written = written
    }

    /// Bytes that come before the first row (the byte order mark).
    func stage(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try self.append($0) }
    }

    /// Runs one `COPY … TO STDOUT` and takes in its rows. What is staged
    /// when it returns is not written yet: `flush()`.
    func copy(_ sql: String, on db: PostgresConnection) throws {
        if self.shouldStop() { throw CacheError.cancelled() }
        try db.copyOut(
            sql,
            onRow: { row in
                // One CopyData message is one CSV record (or the header), ending
                // in LF; counted once all its bytes are staged or written.
                if self.crlf, row.last == UInt8(ascii: "\n") {
                    try self.append(UnsafeRawBufferPointer(rebasing: row.dropLast()))
                    try Self.crlfBytes.withUnsafeBytes { try self.append($0) }
                } else {
                    try self.append(row)
                }
                self.pendingMessages += 1
            }, onIdle: self.idle)
    }

    /// Writes what is staged. Records are counted once written, never before.
    func flush() throws {
        if self.shouldStop() { throw CacheError.cancelled() }
        self.stagedSince = nil
        guard !self.staging.isEmpty else {
            // Messages with no bytes staged (a record larger than the staging
            // block was written on its own) are in already: a write of no
            // bytes tells the destination they are complete.
            if self.pendingMessages > 0 { try self.write(UnsafeRawBufferPointer(start: nil, count: 0), self.pendingMessages) }
            self.rows.add(self.pendingMessages)
            self.pendingMessages = 0
            return
        }
        guard self.reserve(self.staging.count) else { throw CacheError.cacheFull() }
        // Every message taken in so far ends within what is staged (or was
        // written before it): a record is counted with its last byte.
        try self.write(self.staging.bytes, self.pendingMessages)
        self.rows.add(self.pendingMessages)
        self.pendingMessages = 0
        self.staging.removeAll()
        self.first = false
        self.written()
    }

    private func append(_ bytes: UnsafeRawBufferPointer) throws {
        if self.staging.append(bytes) { return }
        try self.flush()
        if !self.staging.append(bytes) {
            // A record larger than the staging block: written on its own, and
            // counted (with the CR LF that follows it, if any) at the next flush.
            guard self.reserve(bytes.count) else { throw CacheError.cacheFull() }
            try self.write(bytes, 0)
            self.written()
        }
    }

    /// The socket has nothing right now. Flushing at every such moment
    /// wrote 8.5 KB at a time on average (155,000 writes, and as many
    /// wake-ups of every live reader, for the 1.3 GB export; streaming it
    /// cost 9 s of CPU against 4 s without a reader). So an idle moment
    /// flushes only once 64 KiB are staged or the oldest staged bytes have
    /// waited 5 ms (the very first rows at once): readers still see rows
    /// within 5 ms. Returns how long PostgreSQL may be waited for.
    private func idle() throws -> Duration {
        if self.shouldStop() { throw CacheError.cancelled() }
        guard !self.staging.isEmpty else { return .seconds(1) }
        let now = self.clock.now
        let since = self.stagedSince ?? now
        self.stagedSince = since
        if self.first || self.staging.count >= Self.idleFlushBytes || now - since >= Self.idleFlushDelay {
            try self.flush()
            return .seconds(1)
        }
        return Self.idleFlushDelay - (now - since)
    }

    private static let crlfBytes: [UInt8] = [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
}
