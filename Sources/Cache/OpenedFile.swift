#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A finished file opened for reading before a response is promised, so
/// that deleting or evicting it afterwards (unlink) cannot take it from the
/// reader: the descriptor keeps the bytes until the last reader lets go.
/// Owns the descriptor; `deinit` hands it to the `FileCloser` (never closed
/// on the caller's executor) and then calls `onClose`, which is how the
/// cache learns that the bytes of a deleted file are gone from the disk.
/// Immutable, so `Sendable`.
public final class OpenedFile: Sendable {
    public let descriptor: Int32
    private let closer: FileCloser
    private let onClose: (@Sendable () -> Void)?

    /// Blocking: call it on a thread pool.
    public init(path: String, closer: FileCloser, onClose: (@Sendable () -> Void)? = nil) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CacheError.system("open", path: path, errno: errno) }
        self.descriptor = fd
        self.closer = closer
        self.onClose = onClose
    }

    deinit { self.closer.close(self.descriptor, then: self.onClose) }
}
