import Foundation

/// An error from PostgreSQL or libpq. `description` is safe to show a client;
/// the server's own message is in `details`, for the log only, as
/// postgres-nio's `PSQLError` does. `details` keeps only the message's first
/// line: the lines after it (`LINE 1: …`, `DETAIL:`, `QUERY:`) quote the SQL,
/// with an export's filter values, or row data, which no log line may hold.
struct PostgresError: Error, CustomStringConvertible, Sendable {
    enum Code: Sendable {
        case connectionFailed
        case queryFailed
        case queryCancelled
        case connectionLost
    }

    let code: Code
    /// The SQLSTATE, when the server sent one.
    let sqlState: String?
    let details: String

    init(code: Code, sqlState: String?, details: String) {
        self.code = code
        self.sqlState = sqlState
        self.details = String(details.split(whereSeparator: \.isNewline).first ?? "").trimmingCharacters(in: .whitespaces)
    }

    var description: String {
        switch self.code {
        case .connectionFailed: "could not connect to the database"
        case .queryFailed: "the database query failed"
        case .queryCancelled: "the database query was cancelled"
        case .connectionLost: "the connection to the database was lost"
        }
    }

    static func connectionFailed(_ details: String) -> PostgresError {
        PostgresError(code: .connectionFailed, sqlState: nil, details: details)
    }

    static func queryFailed(sqlState: String?, _ details: String) -> PostgresError {
        // 57014 query_canceled: what PQcancel (or statement_timeout) produces.
        PostgresError(code: sqlState == "57014" ? .queryCancelled : .queryFailed, sqlState: sqlState, details: details)
    }

    static func connectionLost(_ details: String) -> PostgresError {
        PostgresError(code: .connectionLost, sqlState: nil, details: details)
    }
}
