import Foundation

/// One row of a query's result, read by column name rather than position, so
/// a struct's fields are decoded from the columns that name them and a
/// column added to or moved in a SELECT cannot shift the others. Values
/// are PostgreSQL's text forms; every accessor is nil for NULL (or text
/// that is not of its type). Asking for a column the query does not have is
/// a programming error (an assertion in debug builds, nil otherwise).
struct ResultRow {
    private let names: [String: Int]
    private let values: [String?]

    init(columns: [String: Int], values: [String?]) {
        self.names = columns
        self.values = values
    }

    /// Every row of `result`, each with its result's column names.
    static func rows(of result: PostgresConnection.QueryResult) -> [ResultRow] {
        var columns: [String: Int] = [:]
        // The first of a repeated name, as SQL's own resolution would not allow it anyway.
        for (index, name) in result.columns.enumerated() where columns[name] == nil { columns[name] = index }
        return result.rows.map { ResultRow(columns: columns, values: $0) }
    }

    func text(_ column: String) -> String? {
        guard let index = self.names[column] else {
            assertionFailure("no column \(column) in the row (\(self.names.keys.sorted()))")
            return nil
        }
        return index < self.values.count ? self.values[index] : nil
    }

    func uuid(_ column: String) -> UUID? { self.text(column).flatMap(UUID.init(uuidString:)) }

    func int(_ column: String) -> Int? { self.text(column).flatMap { Int($0) } }

    func int64(_ column: String) -> Int64? { self.text(column).flatMap { Int64($0) } }

    func double(_ column: String) -> Double? { self.text(column).flatMap(Double.init) }

    /// True only for PostgreSQL's `t` (false for `f` and NULL).
    func bool(_ column: String) -> Bool { self.text(column) == "t" }

    /// A time selected as `extract(epoch FROM …)`: seconds since 1970.
    func date(_ column: String) -> Date? { self.double(column).map { Date(timeIntervalSince1970: $0) } }
}

extension PostgresConnection {
    /// The rows of one statement (or the last of several), by column name.
    func rows(_ sql: String) throws -> [ResultRow] {
        ResultRow.rows(of: try self.query(sql))
    }

    /// The rows of one statement with bound parameters, by column name.
    func rows(_ sql: String, parameters: [String?]) throws -> [ResultRow] {
        ResultRow.rows(of: try self.query(sql, parameters: parameters))
    }
}
