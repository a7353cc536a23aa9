import NIOCore

/// The gzip form of a byte stream as a pure function of the stream: zlib's
/// output depends on the input and on where it is flushed, so flushes come
/// only at fixed offsets of the input (every `flushInterval` bytes), never
/// when a follower happens to catch up with a growing export.
///
/// Why it matters: after a restart an export runs again and its gzip form
/// is made again, and a client resuming with `Range` (curl -C - sends no
/// If-Range) splices its old bytes with the new ones. Seen before this type:
/// the same CSV gave gzip forms of 5,092,761 and 5,092,944 bytes, and the
/// resumed file failed its CRC with curl exiting 0. Now the form made again
/// is byte for byte the first, so its ETag and every range of it stay true.
///
/// A sync flush every 64 KiB of CSV costs a few bytes each and lets gzip
/// readers of a running export decompress all but the last 64 KiB of it.
final class DeterministicGzip {
    private let stream: GzipStream
    let flushInterval: Int
    /// Input bytes given to zlib so far.
    private(set) var consumed = 0

    init(level: Int32, flushInterval: Int = 64 * 1024) throws {
        self.stream = try GzipStream(level: level)
        self.flushInterval = max(1, flushInterval)
    }

    /// Compresses `input`, flushing at each multiple of `flushInterval` it crosses.
    func compress(_ input: ByteBuffer) throws -> [ByteBuffer] {
        var remaining = input
        var output: [ByteBuffer] = []
        while remaining.readableBytes > 0 {
            let toBoundary = self.flushInterval - self.consumed % self.flushInterval
            let take = min(toBoundary, remaining.readableBytes)
            guard let part = remaining.readSlice(length: take) else { break }
            output.append(try self.stream.compress(part))
            self.consumed += take
            if self.consumed % self.flushInterval == 0 { output += try self.stream.flush() }
        }
        return output
    }

    /// The rest and the gzip trailer.
    func finish() throws -> [ByteBuffer] {
        try self.stream.finish()
    }
}
