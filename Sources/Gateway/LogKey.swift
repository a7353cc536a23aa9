import Logging

/// Metadata keys of the gateway's log lines, in one place.
enum LogKey {
    static let exportID = "gateway.export.id"
    static let runID = "gateway.run.id"
    static let backendPID = "gateway.db.backend_pid"
    static let rows = "gateway.export.rows"
    static let bytes = "gateway.export.bytes"
    static let sha256 = "gateway.export.sha256"
    static let access = "gateway.access"
    static let accessTokens = "gateway.access.tokens"
    static let cacheEvicted = "gateway.cache.evicted"
    static let cacheFile = "gateway.cache.file"
    static let cacheMaxBytes = "gateway.cache.max_bytes"
    static let cacheRemoved = "gateway.cache.removed"
    static let connections = "gateway.connections"
    static let exportAttempt = "gateway.export.attempt"
    static let exportHeadMilliseconds = "gateway.export.head_ms"
    static let exportMilliseconds = "gateway.export.ms"
    static let exportPieces = "gateway.export.pieces"
    static let exportRange = "gateway.export.range"
    static let exportsExpired = "gateway.exports.expired"
    static let exportsInterrupted = "gateway.exports.interrupted"
    static let exportsReleased = "gateway.exports.released"
    static let exportsStopped = "gateway.exports.stopped"
    static let httpBytes = "gateway.http.bytes"
    static let httpDurationMilliseconds = "gateway.http.duration_ms"
    static let httpLastDataSentMilliseconds = "gateway.http.last_data_sent_ms"
    static let httpMethod = "gateway.http.method"
    static let httpOutcome = "gateway.http.outcome"
    static let httpPendingChunks = "gateway.http.pending_chunks"
    static let httpRequestID = "gateway.http.request_id"
    static let httpRoute = "gateway.http.route"
    static let httpStatus = "gateway.http.status"
    static let instance = "gateway.instance"
    static let journalExports = "gateway.journal.exports"
    static let journalRequeued = "gateway.journal.requeued"
    static let seedRows = "gateway.seed.rows"
    static let seedSeconds = "gateway.seed.seconds"
    static let shutdownGraceSeconds = "gateway.shutdown.grace_seconds"
    static let signal = "gateway.signal"
}

extension Duration {
    /// Milliseconds with one decimal (`12.3`), as log lines give durations.
    var logMilliseconds: String {
        let (seconds, attoseconds) = self.components
        let tenths = max(0, Int((Double(seconds) * 10_000 + Double(attoseconds) / 1e14).rounded()))
        return "\(tenths / 10).\(tenths % 10)"
    }
}
