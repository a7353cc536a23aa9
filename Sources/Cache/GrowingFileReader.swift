import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads a byte range of a `GrowingFile`, following it while it grows.
///
/// Each chunk is read into a buffer from its `ReadBufferSource` (for a
/// download, the shared `ReadBufferPool`, which bounds the memory of all
/// readers together), so a reader holds no memory of its own whatever the
/// size of the file or the pace of the client. Opens and reads run on a
/// `NIOThreadPool`, never on the caller's executor. The reader owns the
/// descriptor it opens: it is closed (on the pool) when the range is done,
/// on an error, or in `deinit`.
public final class GrowingFileReader {
    private let file: GrowingFile
    private let threadPool: NIOThreadPool
    private let chunkSize: Int
    private let buffers: any ReadBufferSource
    private var offset: Int
    private let end: Int?
    private var fd: Int32 = -1
    /// A descriptor opened by the caller beforehand; kept alive while reading, never closed here.
    private let opened: OpenedFile?

    /// - Parameters:
    ///   - offset: the first byte to read.
    ///   - end: one past the last byte to read; nil reads until the file ends.
    ///   - chunkSize: the most one read asks for.
    ///   - buffers: where each chunk's buffer comes from.
    ///   - opened: the finished file, already open (see `OpenedFile`).
    public init(
        file: GrowingFile, from offset: Int = 0, to end: Int? = nil, chunkSize: Int = 128 * 1024, threadPool: NIOThreadPool, buffers: any ReadBufferSource = FreshReadBuffers(),
        opened: OpenedFile? = nil
    ) {
        self.file = file
        self.opened = opened
        self.offset = offset
        self.end = end
        self.chunkSize = max(1, chunkSize)
        self.threadPool = threadPool
        self.buffers = buffers
    }

    deinit { self.closeFile() }

    /// The next chunk, nil at the end of the range or of the finished file.
    /// Throws the producer's `CacheError` if the file failed, so that a caller
    /// streaming it can abort instead of ending cleanly.
    public func next() async throws -> ByteBuffer? {
        while true {
            if let end, self.offset >= end { return self.finish() }
            let path: String
            let available: Int
            let complete: Bool
            switch try await self.file.progress(beyond: self.offset) {
            case .available(let p, let length):
                (path, available, complete) = (p, length, false)
            case .complete(let published):
                guard published.size > self.offset else { return self.finish() }
                (path, available, complete) = (published.path, published.size, true)
            }
            let want = min(self.chunkSize, available - self.offset, (self.end ?? .max) - self.offset)
            let chunk = ChunkBox(try await self.buffers.buffer(preferred: want))
            let count = min(want, max(1, chunk.capacity))
            let offset = self.offset
            let (opened, descriptor) = (self.opened, self.fd)
            let read = try await self.threadPool.runIfActive { () -> ChunkRead in
                let fd: Int32
                if let opened {
                    fd = opened.descriptor
                } else if descriptor >= 0 {
                    fd = descriptor
                } else {
                    fd = open(path, O_RDONLY | O_CLOEXEC)
                    if fd < 0 {
                        if errno == ENOENT { return .missing }
                        throw CacheError.system("open", path: path, errno: errno)
                    }
                }
                var buffer = chunk.take()
                do {
                    try Self.read(fd: fd, into: &buffer, at: offset, count: count, path: path)
                } catch {
                    if fd != descriptor, opened == nil { close(fd) }
                    throw error
                }
                return .read(buffer, openedHere: fd != descriptor && opened == nil ? fd : nil)
            }
            switch read {
            case .missing:
                // A finished file does not move again: gone means deleted.
                if complete { throw CacheError.system("open", path: path, errno: ENOENT) }
                // The partial file was renamed (published) or removed (failed)
                // between the progress report and the open: wait, without
                // spinning, until the file ends one way or the other.
                _ = try await self.file.progress(beyond: .max)
            case .read(let chunk, let openedHere):
                // A partial file renamed on completion is the same inode, so
                // a descriptor opened here stays good to the end.
                if let openedHere { self.fd = openedHere }
                guard chunk.readableBytes > 0 else {
                    // The file is shorter than the producer said: never pass that off as the end.
                    throw CacheError.failed("\(path) ended at \(offset), expected \(available) bytes")
                }
                self.offset += chunk.readableBytes
                return chunk
            }
        }
    }

    /// Carries a chunk's buffer to the pool thread as its only reference,
    /// so the read fills it in place instead of copying it. `@unchecked
    /// Sendable`: one thread at a time touches it, before and during the hop.
    private final class ChunkBox: @unchecked Sendable {
        private var buffer: ByteBuffer
        let capacity: Int

        init(_ buffer: ByteBuffer) {
            self.buffer = buffer
            self.capacity = buffer.capacity
        }

        /// The buffer, leaving an empty one behind.
        func take() -> ByteBuffer {
            defer { self.buffer = ByteBuffer() }
            return self.buffer
        }
    }

    private enum ChunkRead: Sendable {
        case missing
        case read(ByteBuffer, openedHere: Int32?)
    }

    /// Reads up to `count` bytes at `offset` into `buffer` (which has room for them).
    private static func read(fd: Int32, into buffer: inout ByteBuffer, at offset: Int, count: Int, path: String) throws {
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            while true {
                let n = pread(fd, raw.baseAddress, count, off_t(offset))
                if n >= 0 { return n }
                if errno != EINTR { throw CacheError.system("pread", path: path, errno: errno) }
            }
        }
    }

    private func finish() -> ByteBuffer? {
        self.closeFile()
        return nil
    }

    private func closeFile() {
        if self.fd >= 0 {
            FileCloser(threadPool: self.threadPool).close(self.fd)
            self.fd = -1
        }
    }
}
