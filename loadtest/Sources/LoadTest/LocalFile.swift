import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A file of the load test's own (a finished export kept for range checks),
/// owned with its descriptor: reads and writes take explicit offsets and run
/// on NIO's thread pool, never on the cooperative pool; `close()` once, and
/// `deinit` closes what was left open.
final class LocalFile: Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let path: String
    private let descriptor: Int32
    private let closed = Mutex(false)

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { self.close() }

    /// A new file (never an existing one), mode 0600.
    static func create(_ path: String) async throws -> LocalFile {
        try await Self.open(path, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC)
    }

    static func openForReading(_ path: String) async throws -> LocalFile {
        try await Self.open(path, flags: O_RDONLY | O_CLOEXEC)
    }

    private static func open(_ path: String, flags: Int32) async throws -> LocalFile {
        let fd = try await NIOThreadPool.singleton.runIfActive { () throws -> Int32 in
            let fd = Glibc.open(path, flags, 0o600)
            guard fd >= 0 else { throw Failure(description: "open \(path): \(String(cString: strerror(errno)))") }
            return fd
        }
        return LocalFile(path: path, descriptor: fd)
    }

    func write(_ buffer: ByteBuffer, at offset: Int) async throws {
        let fd = self.descriptor
        try await NIOThreadPool.singleton.runIfActive {
            try buffer.withUnsafeReadableBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let n = pwrite(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done, off_t(offset + done))
                    if n < 0, errno == EINTR { continue }
                    guard n > 0 else { throw Failure(description: "write: \(String(cString: strerror(errno)))") }
                    done += n
                }
            }
        }
    }

    /// Up to `count` bytes at `offset` (fewer only at the end of the file).
    func read(at offset: Int, count: Int) async throws -> [UInt8] {
        let fd = self.descriptor
        return try await NIOThreadPool.singleton.runIfActive {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            try bytes.withUnsafeMutableBytes { out in
                while done < count {
                    let n = pread(fd, out.baseAddress.map { $0 + done }, count - done, off_t(offset + done))
                    if n < 0, errno == EINTR { continue }
                    if n == 0 { break }
                    guard n > 0 else { throw Failure(description: "read: \(String(cString: strerror(errno)))") }
                    done += n
                }
            }
            return Array(bytes.prefix(done))
        }
    }

    /// Closing a small local file does not block for long; done inline.
    func close() {
        let wasClosed = self.closed.withLock { closed in
            defer { closed = true }
            return closed
        }
        if !wasClosed { Glibc.close(self.descriptor) }
    }

    static func remove(_ path: String) async {
        _ = try? await NIOThreadPool.singleton.runIfActive { unlink(path) }
    }

    static func rename(_ from: String, to: String) async throws {
        try await NIOThreadPool.singleton.runIfActive {
            guard Glibc.rename(from, to) == 0 else { throw Failure(description: "rename: \(String(cString: strerror(errno)))") }
        }
    }
}
