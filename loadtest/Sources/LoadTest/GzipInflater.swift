import CZlib
import NIOCore

/// Inflates one gzip stream as it arrives, handing the CSV bytes on, and
/// says whether the stream reached its end (trailer checked by zlib). Owns
/// its `z_stream`: `init` throws when zlib cannot start, `deinit` ends it.
/// Used by one download task at a time (not Sendable).
final class GzipInflater {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private let stream: UnsafeMutablePointer<z_stream>
    private var output = [UInt8](repeating: 0, count: 256 * 1024)
    /// True once zlib has seen the end of the stream and its trailer.
    private(set) var finished = false

    init() throws {
        self.stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        self.stream.initialize(to: z_stream())
        let status = czlib_inflate_init_gzip(self.stream)
        guard status == Z_OK else {
            self.stream.deinitialize(count: 1)
            self.stream.deallocate()
            throw Failure(description: "inflateInit2 returned \(status)")
        }
    }

    deinit {
        inflateEnd(self.stream)
        self.stream.deinitialize(count: 1)
        self.stream.deallocate()
    }

    /// Feeds compressed bytes; `sink` gets every inflated block in order.
    func feed(_ buffer: ByteBuffer, _ sink: (UnsafeRawBufferPointer) -> Void) throws {
        guard buffer.readableBytes > 0 else { return }
        if self.finished { throw Failure(description: "bytes after the end of the gzip stream") }
        try buffer.withUnsafeReadableBytes { input in
            guard let base = input.baseAddress else { return }
            self.stream.pointee.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
            self.stream.pointee.avail_in = uInt(input.count)
            defer {
                self.stream.pointee.next_in = nil
                self.stream.pointee.avail_in = 0
            }
            while self.stream.pointee.avail_in > 0 {
                let (status, produced) = self.output.withUnsafeMutableBytes { out -> (Int32, Int) in
                    self.stream.pointee.next_out = out.baseAddress?.assumingMemoryBound(to: Bytef.self)
                    self.stream.pointee.avail_out = uInt(out.count)
                    let status = inflate(self.stream, Z_NO_FLUSH)
                    return (status, out.count - Int(self.stream.pointee.avail_out))
                }
                if produced > 0 { self.output.withUnsafeBytes { sink(UnsafeRawBufferPointer(rebasing: $0.prefix(produced))) } }
                switch status {
                case Z_OK:
                    continue
                case Z_STREAM_END:
                    self.finished = true
                    if self.stream.pointee.avail_in > 0 { throw Failure(description: "bytes after the end of the gzip stream") }
                    return
                case Z_BUF_ERROR where produced > 0:
                    continue
                default:
                    let message = self.stream.pointee.msg.map { String(cString: $0) } ?? "zlib status \(status)"
                    throw Failure(description: "gzip body does not inflate: \(message)")
                }
            }
        }
    }
}
