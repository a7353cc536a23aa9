/// Judges downloads against the bytes they must be, and records what is wrong.
struct DownloadCheck: Sendable {
    let recorder: Recorder

    /// A body that ended as HTTP says it ends, against the whole file.
    /// gzip bodies are judged by the CSV they inflate to. `stitched` is a
    /// download resumed with Range (its two parts hashed as one stream).
    @discardableResult
    func whole(_ state: BodySummary, expected: Digest, what: String, stitched: Bool = false) -> Bool {
        if state.isGzip {
            if let failure = state.inflateFailure {
                self.recorder.error(.gzipMismatch, "\(what): \(failure) (after \(state.received) compressed bytes)")
                return false
            }
            if !state.inflateFinished {
                self.recorder.error(.gzipMismatch, "\(what): the gzip stream ends before its trailer (\(state.received) compressed bytes, \(state.inflated) of \(expected.size) CSV bytes)")
                return false
            }
            let sha = state.inflatedSha256
            guard state.inflated == expected.size, sha == expected.sha256 else {
                self.recorder.error(.gzipMismatch, "\(what): inflates to \(state.inflated) bytes sha256 \(sha.prefix(16))…, the file is \(expected)")
                return false
            }
            self.recorder.count(.gzipDownloadsVerified)
        } else {
            let sha = state.sha256
            if state.received != expected.size {
                self.recorder.error(stitched ? .resumeMismatch : .sizeMismatch, "\(what): ended cleanly after \(state.received) bytes, the file is \(expected)")
                return false
            }
            if sha != expected.sha256 {
                self.recorder.error(stitched ? .resumeMismatch : .shaMismatch, "\(what): \(state.received) bytes with sha256 \(sha.prefix(16))…, the file is \(expected)")
                return false
            }
            self.recorder.count(.downloadsVerified)
        }
        if stitched { self.recorder.count(.resumesVerified) }
        return true
    }

    /// Headers of a finished file's whole download (200 with a length).
    func finishedHeaders(_ result: DownloadResult, status: ExportStatus, what: String) {
        guard result.code == 200, let expected = status.digest else { return }
        if result.isGzip {
            if let gzipSha = status.gzipSha256, let etag = result.etag, etag != "\"\(gzipSha)\"" {
                self.recorder.error(.headerMismatch, "\(what): gzip ETag \(etag), status gzipSha256 \(gzipSha)")
            }
            return
        }
        // A live download that became a finished one has neither (chunked, no-store).
        guard let length = result.headers.first(name: "Content-Length") else { return }
        if Int(length) != expected.size { self.recorder.error(.headerMismatch, "\(what): Content-Length \(length), status sizeBytes \(expected.size)") }
        if let etag = result.etag, etag != "\"\(expected.sha256)\"" { self.recorder.error(.headerMismatch, "\(what): ETag \(etag), status sha256 \(expected.sha256)") }
    }
}
