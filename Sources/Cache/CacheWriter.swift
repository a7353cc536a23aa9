#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Crypto
import Foundation

/// Writes one partial file and publishes it under its SHA-256.
///
/// Owns the file descriptor: `publish()` or `discard()` closes it, and `deinit`
/// discards a file that was neither published nor discarded. The hash is computed
/// while writing, so publishing never re-reads the file. All calls block: use it
/// from a worker thread, never from an event loop. Not thread-safe: one owner.
public final class CacheWriter {
    public let partialPath: String
    public private(set) var length = 0
    private let store: ContentStore
    private let suffix: String
    private var fd: Int32
    private var hasher = SHA256()

    init(store: ContentStore, suffix: String) throws {
        self.store = store
        self.suffix = suffix
        self.partialPath = "\(store.partialDirectory)/\(UUID().uuidString)\(suffix).partial"
        self.fd = open(self.partialPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard self.fd >= 0 else { throw CacheError.system("open", path: self.partialPath, errno: errno) }
    }

    deinit {
        if self.fd >= 0 { self.discard() }
    }

    /// Appends bytes; returns once the kernel has them (page cache), so a slow
    /// disk slows the caller rather than growing a buffer.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        precondition(self.fd >= 0, "write after publish or discard")
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

    /// Makes the file durable, then renames it to its content address and syncs
    /// the directory, so the name appears only for a complete file.
    public func publish() throws -> PublishedFile {
        precondition(self.fd >= 0, "publish after publish or discard")
        if fsync(self.fd) != 0 {
            let err = errno
            self.discard()
            throw CacheError.system("fsync", path: self.partialPath, errno: err)
        }
        close(self.fd)
        self.fd = -1
        let hex = self.hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let path = self.store.objectPath(sha256: hex, suffix: self.suffix)
        // Same bytes, same name: if the object exists already, rename replaces it
        // with an identical file, and readers of the old inode are unaffected.
        if rename(self.partialPath, path) != 0 {
            let err = errno
            unlink(self.partialPath)
            throw CacheError.system("rename", path: path, errno: err)
        }
        let dir = open(self.store.objectsDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
        return PublishedFile(path: path, size: self.length, sha256: hex)
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
