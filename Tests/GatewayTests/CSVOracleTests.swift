import Foundation
import Testing

/// The CSV of an export is byte for byte what PostgreSQL writes for the same
/// query with `psql \copy` in a UTC session.
@Suite(.serialized) struct CSVOracleTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let query: String
        let select: String
        var delimiter = ","
        var quote = "\""
        var testDescription: String { self.query.isEmpty ? "(no parameters)" : self.query }
    }

    static let all = "id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes"

    static let cases: [Case] = [
        Case(query: "", select: "SELECT \(all) FROM users ORDER BY id"),
        Case(query: "country_code=US,de&min_ltv=0", select: "SELECT \(all) FROM users WHERE country_code IN ('US','DE') AND lifetime_value >= 0 ORDER BY id"),
        Case(query: "subscription_tier=pro&subscription_tier=enterprise&min_ltv=5000.5", select: "SELECT \(all) FROM users WHERE subscription_tier IN ('pro','enterprise') AND lifetime_value >= 5000.5 ORDER BY id"),
        Case(query: "columns=notes,id,full_name&delimiter=%09", select: "SELECT notes, id, full_name FROM users ORDER BY id", delimiter: "\t"),
        Case(query: "columns=full_name,notes,lifetime_value&delimiter=;&quoteChar=%27&country_code=FR", select: "SELECT full_name, notes, lifetime_value FROM users WHERE country_code IN ('FR') ORDER BY id", delimiter: ";", quote: "'"),
        Case(query: "delimiter=%7C&columns=id,created_at,last_login_at,email&subscription_tier=free", select: "SELECT id, created_at, last_login_at, email FROM users WHERE subscription_tier IN ('free') ORDER BY id", delimiter: "|"),
        Case(query: "quoteChar=%27&columns=full_name,notes", select: "SELECT full_name, notes FROM users ORDER BY id", quote: "'"),
        Case(query: "country_code=ZZ", select: "SELECT \(all) FROM users WHERE country_code IN ('ZZ') ORDER BY id"),
    ]

    @Test(arguments: cases)
    func streamedAndCompletedCSVMatchPsqlCopy(_ c: Case) async throws {
        let server = try await Self.server()
        let expected = try await server.psqlCopy(c.select, delimiter: c.delimiter, quote: c.quote)
        #expect(expected.count > 0)

        let streamed = try await curl(server.url("/exports/csv?\(c.query)"))
        #expect(streamed.exitCode == 0)
        #expect(streamed.status == 200)
        #expect(streamed.body == expected, "GET /exports/csv differs from psql for \(c.query)")

        let id = try #require(streamed.headers["x-export-id"])
        try await eventually("completion") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "completed" }
        let completed = try await curl(server.url("/exports/\(id)/download"))
        #expect(completed.body == expected)
        #expect(completed.headers["content-length"] == String(expected.count))
    }

    /// One database for all cases: the oracle and the gateway read the same rows.
    static func server() async throws -> TestServer {
        try await Shared.server.get()
    }
}

/// A server shared by the read-only oracle tests, started once.
enum Shared {
    static let server = Lazy { try await TestServer.start(rows: 4000) }
}

actor Lazy<Value: Sendable> {
    private let make: @Sendable () async throws -> Value
    private var value: Value?
    init(_ make: @escaping @Sendable () async throws -> Value) { self.make = make }
    func get() async throws -> Value {
        if let value { return value }
        let made = try await self.make()
        self.value = made
        return made
    }
}
