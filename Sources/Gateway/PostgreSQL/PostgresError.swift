import Foundation

/// An error from PostgreSQL or libpq. `description` is safe to show a client;
/// the server's own message is in `details`, for the log only, as
/// postgres-nio's `PSQLError` does. No log line may hold an export's filter
/// values or row data, and a server message can quote either, so `details`
/// keeps only the message's first line (the lines after it, `LINE 1: …`,
/// `DETAIL:`, `QUERY:`, quote the SQL or the row), with whatever it puts in
/// double quotes replaced by `"…"` (`invalid input value for enum cc: "ZQ"`),
/// and the SQLSTATE in front, which says what went wrong without any value.
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
        let firstLine = String(details.split(whereSeparator: \.isNewline).first ?? "").trimmingCharacters(in: .whitespaces)
        self.details = (sqlState.map { "[\($0)] " } ?? "") + Self.redactingQuoted(firstLine)
    }

    /// The text with every double-quoted part replaced by `"…"`.
    static func redactingQuoted(_ text: String) -> String {
        var result = ""
        var quoted = false
        for character in text {
            if character == "\"" {
                result += quoted ? "…\"" : "\""
                quoted.toggle()
            } else if !quoted {
                result.append(character)
            }
        }
        return quoted ? result + "…" : result
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
