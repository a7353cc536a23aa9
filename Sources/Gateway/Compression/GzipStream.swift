import CompressNIO
import NIOCore

/// A gzip stream: bytes in, compressed bytes out. Owns its zlib state
/// (through `ZlibCompressor`, freed in its `deinit`). Not thread-safe: one
/// owner, `GzipProducer`, which makes the one gzip form of an export.
final class GzipStream {
    private let compressor: ZlibCompressor
    private let allocator = ByteBufferAllocator()
    /// Input given to zlib since the last flush, possibly not yet in the output.
    private var holdsInput = false

    init(level: Int32 = 6) throws {
        self.compressor = try ZlibCompressor(
            algorithm: .gzip,
            configuration: ZlibConfiguration(windowSize: 15, compressionLevel: level, memoryLevel: 8)
        )
    }

    /// Compresses `input`; the result may be empty while zlib gathers a block.
    func compress(_ input: ByteBuffer) throws -> ByteBuffer {
        var input = input
        var output = self.allocator.buffer(capacity: self.compressor.maxSize(from: input))
        try self.compressor.deflate(from: &input, to: &output, flush: .no)
        self.holdsInput = true
        return output
    }

    /// Everything compressed so far, ready for the client to decompress
    /// (`Z_SYNC_FLUSH`): for a live download that has caught up with the
    /// export, so what it has received is not held back in zlib.
    func flush() throws -> [ByteBuffer] {
        guard self.holdsInput else { return [] }
        self.holdsInput = false
        var empty = self.allocator.buffer(capacity: 0)
        var buffers: [ByteBuffer] = []
        while true {
            var output = self.allocator.buffer(capacity: 64 * 1024)
            try self.compressor.deflate(from: &empty, to: &output, flush: .sync)
            let full = output.writableBytes == 0
            buffers.append(output)
            // A full buffer may mean zlib has more to give.
            if !full { return buffers }
        }
    }

    /// The end of the stream: what zlib still holds, and the gzip trailer,
    /// in as many buffers as it takes.
    func finish() throws -> [ByteBuffer] {
        var empty = self.allocator.buffer(capacity: 0)
        var buffers: [ByteBuffer] = []
        while true {
            var output = self.allocator.buffer(capacity: 64 * 1024)
            do {
                try self.compressor.deflate(from: &empty, to: &output, flush: .finish)
                buffers.append(output)
                return buffers
            } catch let error as CompressNIOError where error == .bufferOverflow {
                // Output full before the end: keep what was written, go on.
                buffers.append(output)
            }
        }
    }
}
