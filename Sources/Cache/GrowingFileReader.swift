#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Reads a byte range of a `GrowingFile`, following it while it grows.
///
/// Each reader has its own descriptor and a fixed chunk size, so its memory is
/// one chunk in flight whatever the size of the file or the pace of the client.
/// Reads run on a `NIOThreadPool`, never on the caller's executor. The reader
/// owns its descriptor: it is closed when the range is done, on an error, or in
/// `deinit`.
public final class GrowingFileReader {
    private let file: GrowingFile
    private let threadPool: NIOThreadPool
    private let chunkSize: Int
    private var offset: Int
    private let end: Int?
    private var fd: Int32 = -1
    /// A descriptor opened by the caller beforehand; kept alive while reading, never closed here.
    private let opened: OpenedFile?
    /// Two buffers used in turn. A chunk handed to the connection is held
    /// there until the socket has taken it; the reader reuses a buffer only
    /// once the connection has let go of it (see `next()`), so a response
    /// never has more than two chunks in memory, and no read allocates (or
    /// page-faults) a new one.
    private let buffers: (ReadBuffer, ReadBuffer)
    private var useSecond = false

    /// - Parameters:
    ///   - offset: the first byte to read.
    ///   - end: one past the last byte to read; nil reads until the file ends.
    ///   - opened: the finished file, already open (see `OpenedFile`).
    public init(file: GrowingFile, from offset: Int = 0, to end: Int? = nil, chunkSize: Int = 128 * 1024, threadPool: NIOThreadPool = .singleton, opened: OpenedFile? = nil) {
        self.file = file
        self.opened = opened
        self.buffers = (ReadBuffer(capacity: chunkSize), ReadBuffer(capacity: chunkSize))
        self.offset = offset
        self.end = end
        self.chunkSize = chunkSize
        self.threadPool = threadPool
    }

    deinit { self.closeFile() }

    /// True when `next()` would wait for the producer: the moment to flush
    /// anything the caller holds back (a compressor's pending block).
    public var isCaughtUp: Bool { self.file.wouldWait(at: self.offset) }

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
            guard let fd = try self.descriptor(for: path) else {
                // A finished file does not move again: gone means deleted.
                if complete { throw CacheError.system("open", path: path, errno: ENOENT) }
                continue
            }
            let offset = self.offset
            let readBuffer = self.useSecond ? self.buffers.1 : self.buffers.0
            self.useSecond.toggle()
            // A write returns once the connection has queued a chunk, not sent
            // it, so a fast reader could queue chunk after chunk ahead of the
            // socket (seen: 258 chunks live at once with a dozen readers).
            // Waiting here for the older chunk to be sent is the bound.
            var pause = 1
            while !readBuffer.isFree {
                try await Task.sleep(for: .milliseconds(pause))
                pause = min(pause * 2, 16)
            }
            let buffer = try await self.threadPool.runIfActive {
                try readBuffer.read(fd: fd, at: offset, count: want, path: path)
            }
            guard buffer.readableBytes > 0 else {
                // The file is shorter than the producer said: never pass that off as the end.
                throw CacheError.failed("\(path) ended at \(offset), expected \(available) bytes")
            }
            self.offset += buffer.readableBytes
            return buffer
        }
    }

    /// Opens `path`, or keeps the descriptor already open: a partial file that is
    /// renamed on completion is the same inode, so the open descriptor stays
    /// good. Nil when the file moved between the progress report and the open
    /// (renamed on completion, or removed on failure): ask for progress again.
    private func descriptor(for path: String) throws -> Int32? {
        if let opened { return opened.descriptor }
        if self.fd >= 0 { return self.fd }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw CacheError.system("open", path: path, errno: errno)
        }
        self.fd = fd
        return fd
    }

    private func finish() -> ByteBuffer? {
        self.closeFile()
        return nil
    }

    private func closeFile() {
        if self.fd >= 0 {
            close(self.fd)
            self.fd = -1
        }
    }
}

/// One reusable read buffer of a `GrowingFileReader`. `@unchecked Sendable`:
/// it crosses to a pool thread for one `read` at a time, awaited by its one
/// reader before the next, so no two threads touch it at once.
private final class ReadBuffer: @unchecked Sendable {
    /// Always a whole chunk, however little a read finds: blocks of one size
    /// (large enough for `mmap`, see MemoryTuning) are returned to the system
    /// when freed, where small ones of many sizes would fragment the heap.
    private var buffer: ByteBuffer

    init(capacity: Int) {
        self.buffer = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// True when no one else (the connection) holds the last chunk read into it.
    var isFree: Bool { self.buffer.modifyIfUniquelyOwned { _ in true } ?? false }

    /// Reads `count` bytes at `offset` into the buffer (reusing its memory when
    /// no one else holds it) and returns them.
    func read(fd: Int32, at offset: Int, count: Int, path: String) throws -> ByteBuffer {
        self.buffer.clear()
        try self.buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            while true {
                let n = pread(fd, raw.baseAddress, count, off_t(offset))
                if n >= 0 { return n }
                if errno != EINTR { throw CacheError.system("pread", path: path, errno: errno) }
            }
        }
        return self.buffer
    }
}
