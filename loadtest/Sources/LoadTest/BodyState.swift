import Crypto
import NIOCore

/// What a download has received so far: the SHA-256 and count of its body
/// bytes and, for a gzip body, of the CSV they inflate to. A resumed
/// download passes the same state to its second request, so the two parts
/// are hashed as one stream without keeping either. One task uses it.
final class BodyState {
    private(set) var digest = SHA256()
    private(set) var received = 0
    /// Set by the first response that came with `Content-Encoding: gzip`.
    private(set) var inflater: GzipInflater?
    private(set) var inflatedDigest = SHA256()
    private(set) var inflated = 0
    private(set) var inflateFailure: String?

    var isGzip: Bool { self.inflater != nil || self.inflateFailure != nil }

    /// The response starts the body again from its first byte (a 200 to a Range request).
    func restart() {
        self.digest = SHA256()
        self.received = 0
        self.inflater = nil
        self.inflatedDigest = SHA256()
        self.inflated = 0
        self.inflateFailure = nil
    }

    func startGzip() {
        guard self.inflater == nil, self.inflateFailure == nil else { return }
        do {
            self.inflater = try GzipInflater()
        } catch {
            self.inflateFailure = "\(error)"
        }
    }

    func take(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { self.digest.update(bufferPointer: $0) }
        self.received += buffer.readableBytes
        guard let inflater = self.inflater else { return }
        do {
            try inflater.feed(buffer) { block in
                self.inflatedDigest.update(bufferPointer: block)
                self.inflated += block.count
            }
        } catch {
            self.inflateFailure = "\(error)"
            self.inflater = nil
        }
    }

    /// What it holds now, to hand across tasks.
    var summary: BodySummary {
        BodySummary(
            received: self.received, sha256: self.sha256, isGzip: self.isGzip, inflated: self.inflated,
            inflatedSha256: self.inflatedSha256, inflateFinished: self.inflateFinished, inflateFailure: self.inflateFailure)
    }

    /// The body's own bytes, as received.
    var sha256: String { Hex.string(self.digest.finalize()) }

    /// The CSV a gzip body inflated to, and whether its stream reached its end.
    var inflatedSha256: String { Hex.string(self.inflatedDigest.finalize()) }
    var inflateFinished: Bool { self.inflater?.finished ?? false }
}

/// A `BodyState` as it stood when its download ended.
struct BodySummary: Sendable {
    let received: Int
    let sha256: String
    let isGzip: Bool
    let inflated: Int
    let inflatedSha256: String
    let inflateFinished: Bool
    let inflateFailure: String?
}
