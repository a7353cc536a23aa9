import Logging

/// Metadata keys of the gateway's log lines, in one place.
enum LogKey {
    static let exportID = "gateway.export.id"
    static let runID = "gateway.run.id"
    static let backendPID = "gateway.db.backend_pid"
    static let rows = "gateway.export.rows"
    static let bytes = "gateway.export.bytes"
    static let sha256 = "gateway.export.sha256"
}

extension Duration {
    /// Milliseconds with one decimal (`12.3`), as log lines give durations.
    var logMilliseconds: String {
        let (seconds, attoseconds) = self.components
        let tenths = max(0, Int((Double(seconds) * 10_000 + Double(attoseconds) / 1e14).rounded()))
        return "\(tenths / 10).\(tenths % 10)"
    }
}
