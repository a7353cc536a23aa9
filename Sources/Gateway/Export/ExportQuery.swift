/// The SQL of one export. Column names come only from `UsersTable.columns`, and
/// every value passes through `literal`, which is libpq's `PQescapeLiteral`:
/// COPY cannot take bound parameters, so escaping is what keeps client text
/// out of the SQL.
struct ExportQuery {
    let request: ExportRequest

    /// `SELECT … FROM users WHERE … ORDER BY id`.
    func select(literal: (String) throws -> String) throws -> String {
        var conditions: [String] = []
        if !request.countryCodes.isEmpty {
            conditions.append("country_code IN (\(try request.countryCodes.map(literal).joined(separator: ", ")))")
        }
        if !request.subscriptionTiers.isEmpty {
            conditions.append("subscription_tier IN (\(try request.subscriptionTiers.map(literal).joined(separator: ", ")))")
        }
        if let minimum = request.minLifetimeValue {
            conditions.append("lifetime_value >= \(try literal(minimum))::numeric")
        }
        let columns = request.columns.map { column in
            precondition(UsersTable.columns.contains(column), "columns are validated by ExportRequest")
            guard request.options.guardFormulas, UsersTable.textColumns.contains(column) else { return column }
            // A leading = + - @ tab or CR would start a formula in a spreadsheet.
            return "CASE WHEN \(column) ~ ('^[-=+@' || chr(9) || chr(13) || ']') THEN '''' || \(column) ELSE \(column) END AS \(column)"
        }
        let filter = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        return "SELECT \(columns.joined(separator: ", ")) FROM users\(filter) ORDER BY id"
    }

    /// The COPY statement whose output is the export, byte for byte.
    func copy(literal: (String) throws -> String) throws -> String {
        var options = "FORMAT csv, HEADER \(request.options.header), DELIMITER \(try literal(String(request.delimiter))), QUOTE \(try literal(String(request.quote)))"
        if let null = request.options.nullAs { options += ", NULL \(try literal(null))" }
        return "COPY (\(try self.select(literal: literal))) TO STDOUT WITH (\(options))"
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
