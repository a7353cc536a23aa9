/// What went wrong, by kind; any of them makes the exit status non-zero.
enum ErrorKind: String, CaseIterable, Codable, Sendable, Comparable {
    /// A whole download that ended cleanly with the right size but other bytes.
    case shaMismatch = "sha_mismatch"
    /// A download that ended cleanly (it looks complete) with another size
    /// than the status says: a chunked body ended early, or a length header that lies.
    case sizeMismatch = "size_mismatch"
    /// A download of an export nobody cancelled that ended without its end
    /// (connection closed early, fewer bytes than Content-Length, no final chunk).
    case truncated
    /// A byte range whose bytes differ from the finished file at those offsets.
    case rangeMismatch = "range_mismatch"
    /// A gzip body that does not inflate, or inflates to other bytes than the CSV.
    case gzipMismatch = "gzip_mismatch"
    /// A download resumed with Range whose stitched bytes differ from the file.
    case resumeMismatch = "resume_mismatch"
    /// Identical requests (or two completed exports of one request) with different bytes.
    case coalesceMismatch = "coalesce_mismatch"
    /// ETag, Content-Length or Content-Range that disagree with the status.
    case headerMismatch = "header_mismatch"
    /// Any 5xx answer.
    case http5xx = "http_5xx"
    /// A status code the API does not give in that situation.
    case unexpectedStatus = "unexpected_status"
    /// Status JSON that does not parse or breaks its own rules.
    case statusInvalid = "status_invalid"
    /// An export that ended `failed`.
    case exportFailed = "export_failed"
    /// A request that failed before any answer (refused, reset).
    case transport
    /// Work still running at the run's time limit, or a response that sent
    /// no byte for `--read-timeout` seconds.
    case timeout

    static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}
