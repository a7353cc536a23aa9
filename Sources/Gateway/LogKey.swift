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
