/// Things counted that are not errors: what was verified, what the gateway
/// refused as documented, and what the load generator itself gave up.
enum Counter: String, CaseIterable, Codable, Sendable {
    case sessions
    case exportsCreated
    /// 429 answers (documented backpressure: the queue is full).
    case refused
    /// Arrivals dropped because `--max-in-flight` sessions were running (the
    /// load generator is saturated, the schedule is no longer open-loop).
    case droppedArrivals
    case downloadsVerified
    case gzipDownloadsVerified
    /// gzip asked for, but the gateway sent the CSV (its compression queue was full).
    case gzipDeclined
    case rangesVerified
    /// Range checks skipped: the file is larger than `--file-cache`.
    case rangesSkipped
    case resumesVerified
    /// `GET /exports/csv` streams judged (their errors are counted by kind).
    case streams
    case cancels
    /// Live downloads of a cancelled export that ended as aborted transfers, as they must.
    case expectedAborts
    /// Downloads of an export cancelled while they ran that still ended whole
    /// (the run finished first); their bytes were checked.
    case completedDespiteCancel
    /// Downloads that got 404 or 410 because their export was cancelled or deleted first.
    case goneBeforeDownload
    case deletes
    /// Extra exports made only to learn the bytes of a request whose own export was cancelled.
    case referenceExports
    /// Sessions cut by Ctrl-C (not errors).
    case interrupted
    case coalesceBursts
    /// Distinct runs (by `startedAt`) seen across all bursts: one a burst when every request joined.
    case coalesceRuns
}
