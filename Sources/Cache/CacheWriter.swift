import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes one partial file, which is then published under its SHA-256.
///
/// Owns the file descriptor: `seal()` or `discard()` closes it, and `deinit`
/// discards a file that was neither sealed nor discarded. The hash is computed
/// while writing, so publishing never re-reads the file. All calls block: use it
/// from a worker thread, never from an event loop. Not thread-safe: one owner.
/// A call out of order (a write after the seal) throws; nothing here traps.
public final class CacheWriter {
    public let partialPath: String
    public private(set) var length = 0
    private let store: ContentStore
    private let suffix: String
    private var fd: Int32
    private var hasher = SHA256()

    init(store: ContentStore, suffix: String, name: String? = nil) throws {
        self.store = store
        self.suffix = suffix
        self.partialPath = "\(store.partialDirectory)/\(name ?? UUID().uuidString)\(suffix).partial"
        // A file of that name is an earlier attempt's, abandoned by this instance: replaced.
        if name != nil { unlink(self.partialPath) }
        self.fd = open(self.partialPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard self.fd >= 0 else { throw CacheError.system("open", path: self.partialPath, errno: errno) }
    }

    deinit {
        if self.fd >= 0 { self.discard() }
    }

    /// Appends bytes; returns once the kernel has them (page cache), so a slow
    /// disk slows the caller rather than growing a buffer.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard self.fd >= 0 else { throw CacheError.failed("write to \(self.partialPath) after it was sealed or discarded") }
        guard var base = bytes.baseAddress else { return }
        var remaining = bytes.count
        while remaining > 0 {
            let n = Glibc.write(self.fd, base, remaining)
            if n < 0 {
                if errno == EINTR { continue }
                throw CacheError.system("write", path: self.partialPath, errno: errno)
            }
            base += n
            remaining -= n
        }
        self.hasher.update(bufferPointer: bytes)
        self.length += bytes.count
    }

    /// Makes the bytes durable (fsync) and closes the file; what is left is to
    /// give it its name (`ContentStore.install`). On failure the partial file
    /// is removed.
    public func seal() throws -> SealedFile {
        guard self.fd >= 0 else { throw CacheError.failed("seal of \(self.partialPath) after it was sealed or discarded") }
        if fsync(self.fd) != 0 {
            let err = errno
            self.discard()
            throw CacheError.system("fsync", path: self.partialPath, errno: err)
        }
        close(self.fd)
        self.fd = -1
        let hex = self.hasher.finalize().map { String(format: "%02x", $0) }.joined()
        return SealedFile(partialPath: self.partialPath, size: self.length, sha256: hex, path: self.store.objectPath(sha256: hex, suffix: self.suffix))
    }

    /// Seals and installs at once: for callers that need no ordering with
    /// other changes to the objects folder (tests).
    public func publish() throws -> PublishedFile {
        try self.store.install(try self.seal())
    }

    /// Closes and removes the partial file.
    public func discard() {
        if self.fd >= 0 {
            close(self.fd)
            self.fd = -1
        }
        unlink(self.partialPath)
    }
}

/// A partial file whose bytes are durable and whose name is known, waiting
/// to be renamed into `objects/`.
public struct SealedFile: Sendable, Equatable {
    public let partialPath: String
    public let size: Int
    public let sha256: String
    /// Where it goes: `objects/<sha256><suffix>`.
    public let path: String

    public var published: PublishedFile { PublishedFile(path: self.path, size: self.size, sha256: self.sha256) }
}
