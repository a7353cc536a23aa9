import Foundation

/// A request that did not come through `ExportRequest.parse`.
enum ExportQueryError: Error {
    case unknownColumn
}

/// The SQL of one export. Column names come only from `UsersTable.columns`, and
/// every value passes through `literal`, which is libpq's `PQescapeLiteral`:
/// COPY cannot take bound parameters, so escaping is what keeps client text
/// out of the SQL.
struct ExportQuery {
    let request: ExportRequest

    /// `SELECT … FROM users WHERE … ORDER BY id`, limited to `ids` when given.
    func select(literal: (String) throws -> String, ids: IDRange? = nil) throws -> String {
        var conditions: [String] = []
        if let condition = ids?.condition {
            // Integers of our own making, not client text.
            conditions.append(condition)
        }
        if !request.countryCodes.isEmpty {
            conditions.append("country_code IN (\(try request.countryCodes.map(literal).joined(separator: ", ")))")
        }
        if !request.subscriptionTiers.isEmpty {
            conditions.append("subscription_tier IN (\(try request.subscriptionTiers.map(literal).joined(separator: ", ")))")
        }
        if let minimum = request.minLifetimeValue {
            conditions.append("lifetime_value >= \(try literal(minimum))::numeric")
        }
        let columns = try request.columns.map { column in
            // Validated by ExportRequest; checked again because only these names may reach SQL.
            guard UsersTable.columns.contains(column) else { throw ExportQueryError.unknownColumn }
            guard request.options.guardFormulas, UsersTable.textColumns.contains(column) else { return column }
            // A leading = + - @ tab or CR would start a formula in a spreadsheet.
            return "CASE WHEN \(column) ~ ('^[-=+@' || chr(9) || chr(13) || ']') THEN '''' || \(column) ELSE \(column) END AS \(column)"
        }
        let filter = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        return "SELECT \(columns.joined(separator: ", ")) FROM users\(filter) ORDER BY id"
    }

    /// The COPY statement whose output is the export (or, with `ids`, the
    /// part of it in that id range), byte for byte.
    func copy(literal: (String) throws -> String, header: Bool? = nil, ids: IDRange? = nil) throws -> String {
        var options = "FORMAT csv, HEADER \(header ?? request.options.header), DELIMITER \(try literal(request.delimiterText)), QUOTE \(try literal(request.quoteText))"
        if let null = request.options.nullAs { options += ", NULL \(try literal(null))" }
        return "COPY (\(try self.select(literal: literal, ids: ids))) TO STDOUT WITH (\(options))"
    }

    /// The planner's estimate of the rows, from `EXPLAIN`'s first line.
    func explain(literal: (String) throws -> String) throws -> String {
        "EXPLAIN \(try self.select(literal: literal))"
    }

    /// Reads `rows=N` from the top line of an `EXPLAIN` plan.
    static func estimatedRows(fromPlanLine line: String) -> Int? {
        guard let range = line.range(of: " rows=") else { return nil }
        return Int(line[range.upperBound...].prefix(while: \.isNumber))
    }
}
