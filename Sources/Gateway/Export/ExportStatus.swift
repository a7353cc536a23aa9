import Cache
import Foundation

/// The JSON of `GET /exports/{id}/status` (and of the 202 that starts one).
/// Optional fields are written as `null` rather than left out, so clients see
/// every field the API documents.
struct ExportStatus: Encodable, Sendable {
    struct Links: Encodable, Sendable {
        let status: String
        let download: String
    }

    let exportId: UUID
    /// What the export reads and how it writes it: the request's parameters,
    /// normalised (`ExportRequest.canonicalQuery`), as `POST /exports/csv` takes them.
    let query: String
    let status: ExportLifecycle.Status
    let rowsWritten: Int
    let rowsRead: Int
    let bytesWritten: Int
    let totalRows: Int?
    let totalRowsExact: Bool
    let progress: Double
    let rowsPerSecond: Double?
    let etaSeconds: Double?
    let createdAt: Date
    let startedAt: Date?
    let completedAt: Date?
    let sizeBytes: Int?
    let sha256: String?
    let gzipSizeBytes: Int?
    let gzipSha256: String?
    let error: String?
    /// The plain download path; the controller replaces it with a signed link.
    var downloadUrl: String
    let links: Links

    init(job: ExportJob, run: ExportRun.Snapshot, cancelledAt: Date?, now: Date) {
        let lifecycle = run.lifecycle
        let status = cancelledAt == nil ? lifecycle.status : .cancelled
        self.exportId = job.id
        self.query = job.run.canonicalQuery
        self.status = status
        self.rowsWritten = run.rowsWritten
        // Equal to rowsWritten once complete: `complete` empties the spooled count.
        let rowsRead = run.rowsRead
        self.rowsRead = rowsRead
        self.bytesWritten = run.bytesWritten
        self.totalRows = run.totalRows
        self.totalRowsExact = run.totalRowsExact
        self.createdAt = job.createdAt
        self.startedAt = lifecycle.startedAt
        self.completedAt = cancelledAt ?? lifecycle.completedAt
        let file = status == .completed ? lifecycle.file : nil
        self.sizeBytes = file?.size
        self.sha256 = file?.sha256
        self.gzipSizeBytes = status == .completed ? run.gzip?.size : nil
        self.gzipSha256 = status == .completed ? run.gzip?.sha256 : nil
        self.error = status == .failed ? lifecycle.errorMessage : nil
        self.downloadUrl = "/exports/\(job.id.uuidString.lowercased())/download"
        self.links = Links(status: "/exports/\(job.id.uuidString.lowercased())/status", download: self.downloadUrl)

        switch status {
        case .completed:
            self.progress = 1
        case .queued, .cancelled, .failed:
            self.progress = 0
        case .running:
            // An estimate can be low; never claim done before it is.
            self.progress = run.totalRows.map { $0 > 0 ? min(0.99, Double(rowsRead) / Double($0)) : 0 } ?? 0
        }
        if let startedAt = lifecycle.startedAt {
            let elapsed = (lifecycle.completedAt ?? now).timeIntervalSince(startedAt)
            let rate = elapsed > 0 ? Double(rowsRead) / elapsed : nil
            self.rowsPerSecond = rate.map { ($0 * 10).rounded() / 10 }
            if status == .completed {
                self.etaSeconds = 0
            } else if status == .running, let rate, rate > 0, let totalRows = run.totalRows {
                self.etaSeconds = (max(0, Double(totalRows - rowsRead) / rate) * 10).rounded() / 10
            } else {
                self.etaSeconds = nil
            }
        } else {
            self.rowsPerSecond = nil
            self.etaSeconds = nil
        }
    }

    private enum CodingKeys: String, CodingKey {
        case exportId, query, status, rowsWritten, rowsRead, bytesWritten, totalRows, totalRowsExact, progress, rowsPerSecond,
            etaSeconds, createdAt, startedAt, completedAt, sizeBytes, sha256, gzipSizeBytes, gzipSha256, error, downloadUrl, links
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.exportId.uuidString.lowercased(), forKey: .exportId)
        try c.encode(self.query, forKey: .query)
        try c.encode(self.status, forKey: .status)
        try c.encode(self.rowsWritten, forKey: .rowsWritten)
        try c.encode(self.rowsRead, forKey: .rowsRead)
        try c.encode(self.bytesWritten, forKey: .bytesWritten)
        try c.encode(self.totalRows, forKey: .totalRows)
        try c.encode(self.totalRowsExact, forKey: .totalRowsExact)
        try c.encode(self.progress, forKey: .progress)
        try c.encode(self.rowsPerSecond, forKey: .rowsPerSecond)
        try c.encode(self.etaSeconds, forKey: .etaSeconds)
        try c.encode(self.createdAt, forKey: .createdAt)
        try c.encode(self.startedAt, forKey: .startedAt)
        try c.encode(self.completedAt, forKey: .completedAt)
        try c.encode(self.sizeBytes, forKey: .sizeBytes)
        try c.encode(self.sha256, forKey: .sha256)
        try c.encode(self.gzipSizeBytes, forKey: .gzipSizeBytes)
        try c.encode(self.gzipSha256, forKey: .gzipSha256)
        try c.encode(self.error, forKey: .error)
        try c.encode(self.downloadUrl, forKey: .downloadUrl)
        try c.encode(self.links, forKey: .links)
    }
}
