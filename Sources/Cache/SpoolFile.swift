import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file in `partial/` that one thread appends to while another reads it
/// behind the writer: a later piece of a parallel export waits here, on
/// disk, until the pieces before it are in the export's own file. Memory
/// stays bounded however far the writer runs ahead.
///
/// The creator owns it: it calls `discard()` once the writer has stopped
/// (`finish` or `fail`), which closes and removes the file. The writer calls
/// `append`, then `finish` or `fail`; the reader calls `read`. Every call
/// blocks: worker threads only. `@unchecked Sendable`: the descriptor is
/// written by one thread (`write(2)` at the file's offset) and read by another
/// (`pread(2)` at offsets it keeps itself), and the shared state is under
/// `condition`.
public final class SpoolFile: @unchecked Sendable {
    public let path: String
    private let fd: Int32
    private let condition = NSCondition()
    /// Under `condition`.
    private var length = 0
    private var end: End?
    private var discarded = false
    /// (end offset, records up to it) after each append that completed
    /// records, so the reader can say how many records it has copied.
    private var checkpoints: [(offset: Int, records: Int)] = []
    private var records = 0

    private enum End {
        case finished
        case failed(any Error)
    }

    /// What `read` found.
    public enum ReadResult {
        /// This many bytes were read into the buffer.
        case bytes(Int)
        /// Nothing new yet: ask again (the wait was cut short).
        case nothingYet
        /// The writer finished and every byte was read.
        case ended
    }

    public init(store: ContentStore, suffix: String) throws {
        self.path = "\(store.partialDirectory)/\(UUID().uuidString)\(suffix).spool"
        self.fd = open(self.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard self.fd >= 0 else { throw CacheError.system("open", path: self.path, errno: errno) }
    }

    deinit { self.discard() }

    /// Appends bytes that complete `records` more records (the writer
    /// only); readers see them once this returns.
    public func append(_ bytes: UnsafeRawBufferPointer, records: Int = 0) throws {
        guard self.isOpen else { throw CacheError.failed("append to \(self.path) after it was discarded") }
        guard var base = bytes.baseAddress, bytes.count > 0 else {
            // Records whose bytes went in with an earlier append (one larger than the writer's block).
            self.settleRecords(records)
            return
        }
        var remaining = bytes.count
        while remaining > 0 {
            let n = write(self.fd, base, remaining)
            if n < 0 {
                if errno == EINTR { continue }
                throw CacheError.system("write", path: self.path, errno: errno)
            }
            base += n
            remaining -= n
        }
        self.settleRecords(records, length: bytes.count)
    }

    /// Counts `length` more bytes and `records` more as ending within the
    /// bytes appended so far, and wakes the reader. One critical section: a
    /// reader that sees the bytes sees their records too.
    private func settleRecords(_ records: Int, length: Int = 0) {
        self.condition.lock()
        self.length += length
        if records > 0 {
            self.records += records
            self.checkpoints.append((self.length, self.records))
        }
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// False once the owner discarded it: its descriptor is closed (and its
    /// number may be another file's), so nothing may touch it any more.
    private var isOpen: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        return !self.discarded
    }

    /// Records wholly within the first `offset` bytes, as far as the appends
    /// told (never more than there are).
    public func records(within offset: Int) -> Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        var low = 0
        var high = self.checkpoints.count
        // The last checkpoint at or before `offset`.
        while low < high {
            let middle = (low + high) / 2
            if self.checkpoints[middle].offset <= offset { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? 0 : self.checkpoints[low - 1].records
    }

    /// True when the writer failed before a byte was appended.
    public var failedEmpty: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        if case .failed = self.end { return self.length == 0 }
        return false
    }

    /// The writer is done: every byte is in.
    public func finish() { self.settle(.finished) }

    /// The writer gave up; the reader gets `error`. The first end wins.
    public func fail(_ error: any Error) { self.settle(.failed(error)) }

    private func settle(_ end: End) {
        self.condition.lock()
        if self.end == nil { self.end = end }
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// Reads what lies at `offset`, waiting up to `timeout` for the writer
    /// when there is nothing yet. Throws the writer's error once it failed.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, timeout: TimeInterval) throws -> ReadResult {
        self.condition.lock()
        if self.length <= offset, self.end == nil {
            _ = self.condition.wait(until: Date(timeIntervalSinceNow: timeout))
        }
        let available = self.length - offset
        let end = self.end
        self.condition.unlock()
        if case .failed(let error) = end { throw error }
        guard available > 0 else { return end == nil ? .nothingYet : .ended }
        guard self.isOpen else { throw CacheError.failed("read of \(self.path) after it was discarded") }
        guard let base = buffer.baseAddress else { return .nothingYet }
        while true {
            let n = pread(self.fd, base, min(buffer.count, available), off_t(offset))
            if n >= 0 {
                // A short read of bytes the writer reported is the file system failing us.
                guard n > 0 else { throw CacheError.failed("\(self.path) is shorter than what was written to it") }
                return .bytes(n)
            }
            if errno != EINTR { throw CacheError.system("read", path: self.path, errno: errno) }
        }
    }

    /// Closes and removes the file (the owner, once the writer has stopped).
    public func discard() {
        self.condition.lock()
        let first = !self.discarded
        self.discarded = true
        self.condition.unlock()
        guard first else { return }
        close(self.fd)
        unlink(self.path)
    }
}
