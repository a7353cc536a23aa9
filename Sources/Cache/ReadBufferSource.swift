import NIOCore

/// Where a `GrowingFileReader` gets the buffer for each chunk it reads: a
/// buffer it owns alone, so the read fills it in place.
public protocol ReadBufferSource: AnyObject {
    /// A buffer to read at most `preferred` bytes into (its capacity may be
    /// less); may wait for room. Throws if the waiting task is cancelled.
    func buffer(preferred: Int) async throws -> ByteBuffer
}

/// A new buffer for every chunk, outside the download budget: for the gzip
/// producer (at most one per export), whose compression costs a hundred
/// times what the allocation does.
public final class FreshReadBuffers: ReadBufferSource {
    public init() {}

    public func buffer(preferred: Int) async throws -> ByteBuffer {
        ByteBufferAllocator().buffer(capacity: preferred)
    }
}
