/// The operations whose latencies are measured.
enum Operation: String, CaseIterable, Codable, Sendable {
    /// `POST /exports/csv`, until the 202 has been read.
    case create
    /// `GET /exports/{id}/status`.
    case status
    /// From sending a download (or `GET /exports/csv`) to its first body byte.
    case firstByte
    /// A whole download (or a resumed one's second part), to its last byte.
    case download
    /// A `Range` request of a finished file, to its last byte.
    case range
    /// `DELETE /exports/{id}`.
    case delete
}
