#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A finished file opened for reading before a response is promised, so
/// that deleting or evicting it afterwards (unlink) cannot take it from the
/// reader: the descriptor keeps the bytes until the last reader lets go.
/// Owns the descriptor and closes it in `deinit`; immutable, so `Sendable`.
public final class OpenedFile: Sendable {
    public let descriptor: Int32

    /// Blocking: call it on a thread pool.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CacheError.system("open", path: path, errno: errno) }
        self.descriptor = fd
    }

    deinit { close(self.descriptor) }
}
