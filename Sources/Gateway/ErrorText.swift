import Cache

/// The two texts of an error, in one place. What a client may read: the
/// gateway's own errors have descriptions written for clients (no values,
/// no paths, no server messages); anything else gets a fixed sentence. What
/// the log gets beyond that: the server's first line with quoted values
/// redacted, an errno with its path, the journal's reason.
enum ErrorText {
    /// Safe to show a client (a status's `error`, a failed download).
    static func forClient(_ error: any Error, otherwise fallback: String) -> String {
        switch error {
        case let error as PostgresError: error.description
        case let error as CacheError: error.description
        default: fallback
        }
    }

    /// For the log only.
    static func details(_ error: any Error) -> String {
        switch error {
        case let error as PostgresError: error.details
        case let error as CacheError: error.details
        case let error as ExportJournal.Unavailable: error.details
        default: "\(error)"
        }
    }
}
