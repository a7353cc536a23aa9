import Foundation
import Testing

@testable import Gateway

/// The CSV of an export is byte for byte what PostgreSQL writes for the same
/// query with `psql \copy` in a UTC session.
@Suite(.serialized) struct CSVOracleTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let query: String
        let select: String
        var delimiter = ","
        var quote = "\""
        var header = true
        var extra = ""
        var testDescription: String { self.query.isEmpty ? "(no parameters)" : self.query }
    }

    static let all = "id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes"

    static let cases: [Case] = [
        Case(query: "", select: "SELECT \(all) FROM users ORDER BY id"),
        Case(query: "country_code=US,de&min_ltv=0", select: "SELECT \(all) FROM users WHERE country_code IN ('US','DE') AND lifetime_value >= 0 ORDER BY id"),
        Case(
            query: "subscription_tier=pro&subscription_tier=enterprise&min_ltv=5000.5",
            select: "SELECT \(all) FROM users WHERE subscription_tier IN ('pro','enterprise') AND lifetime_value >= 5000.5 ORDER BY id"),
        Case(query: "columns=notes,id,full_name&delimiter=%09", select: "SELECT notes, id, full_name FROM users ORDER BY id", delimiter: "\t"),
        Case(
            query: "columns=full_name,notes,lifetime_value&delimiter=;&quoteChar=%27&country_code=FR",
            select: "SELECT full_name, notes, lifetime_value FROM users WHERE country_code IN ('FR') ORDER BY id", delimiter: ";", quote: "'"),
        Case(
            query: "delimiter=%7C&columns=id,created_at,last_login_at,email&subscription_tier=free",
            select: "SELECT id, created_at, last_login_at, email FROM users WHERE subscription_tier IN ('free') ORDER BY id", delimiter: "|"),
        Case(query: "quoteChar=%27&columns=full_name,notes", select: "SELECT full_name, notes FROM users ORDER BY id", quote: "'"),
        Case(query: "country_code=ZZ", select: "SELECT \(all) FROM users WHERE country_code IN ('ZZ') ORDER BY id"),
        Case(query: "header=false&nullAs=%5CN&columns=id,notes,last_login_at", select: "SELECT id, notes, last_login_at FROM users ORDER BY id", header: false, extra: ", NULL '\\N'"),
        Case(query: "nullAs=NULL&delimiter=;&header=true", select: "SELECT \(all) FROM users ORDER BY id", delimiter: ";", extra: ", NULL 'NULL'"),
    ]

    /// Every case read by one COPY and by three in parallel (each piece of
    /// a parallel export a range of ids under one snapshot, stitched).
    @Test(arguments: cases, [1, 3])
    func streamedAndCompletedCSVMatchPsqlCopy(_ c: Case, _ parallelism: Int) async throws {
        let server = try await Self.server(parallelism: parallelism)
        let expected = try await server.psqlCopy(c.select, delimiter: c.delimiter, quote: c.quote, header: c.header, extraOptions: c.extra)
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
        // The parallel server really read it in pieces (when it had rows enough to cut).
        let pieces = try #require(server.exportRun(id)).pieces
        let records = expected.count { $0 == UInt8(ascii: "\n") }
        #expect(parallelism == 1 ? pieces == 1 : (records < 100 || pieces > 1), "\(pieces) pieces for \(records) lines")
    }

    /// Both ways of reading an export give PostgreSQL's bytes: a head and the
    /// rest (FAST_START, when the plan sorts) and one COPY.
    @Test(arguments: [true, false], [1, 3])
    func fastStartOnOrOffGivesTheSameBytes(_ fastStart: Bool, _ parallelism: Int) async throws {
        let server = try await TestServer.start(rows: 5000, fastStart: fastStart, exportsTuning: Self.parallel(parallelism))
        defer { Task { await server.stop() } }
        for c in Self.cases.prefix(3) {
            let expected = try await server.psqlCopy(c.select, delimiter: c.delimiter, quote: c.quote, header: c.header, extraOptions: c.extra)
            #expect(try await curl(server.url("/exports/csv?\(c.query)")).body == expected, "\(c.query)")
        }
    }

    /// excel=true: BOM, CRLF record ends, formula guarding; the expected bytes
    /// are psql's output with a guard written another way (a prefix test
    /// rather than the gateway's regular expression), then a BOM and CRLF
    /// record ends put in by a quote-aware scan.
    @Test(arguments: [1, 3])
    func excelPresetIsBOMPlusCRLFPlusFormulaGuard(_ parallelism: Int) async throws {
        let server = try await Self.server(parallelism: parallelism)
        func guarded(_ c: String) -> String {
            "CASE WHEN left(\(c), 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || \(c) ELSE \(c) END"
        }
        let select =
            "SELECT id, \(guarded("email")), \(guarded("full_name")), \(guarded("country_code")), \(guarded("subscription_tier")), lifetime_value, created_at, last_login_at, \(guarded("notes")) FROM users ORDER BY id"
        let plain = try await server.psqlCopy(select)
        // psql names the columns after the CASE ("case"); the header comes from the plain query.
        let header = try await server.psqlCopy("SELECT \(Self.all) FROM users LIMIT 0")
        let body = plain[plain.firstIndex(of: UInt8(ascii: "\n"))! + 1..<plain.endIndex]
        let expected = Data([0xEF, 0xBB, 0xBF]) + Self.crlfRecords(header + body, quote: UInt8(ascii: "\""))
        #expect(expected.range(of: Data("\n'=SUM".utf8)) != nil || expected.range(of: Data(",'=SUM".utf8)) != nil, "the data has formulas to guard")

        let excel = try await curl(server.url("/exports/csv?excel=true"))
        #expect(excel.body == expected)
        let noBOM = try await curl(server.url("/exports/csv?excel=true&bom=false&lineEnding=lf"))
        #expect(noBOM.body == header + body)
        let crlfOnly = try await curl(server.url("/exports/csv?lineEnding=crlf&columns=id,notes"))
        #expect(crlfOnly.body == Self.crlfRecords(try await server.psqlCopy("SELECT id, notes FROM users ORDER BY id"), quote: UInt8(ascii: "\"")))
    }

    /// LF outside quotes (a record end) becomes CR LF; LF inside a quoted field stays.
    static func crlfRecords(_ csv: Data, quote: UInt8) -> Data {
        var out = Data()
        out.reserveCapacity(csv.count + csv.count / 50)
        var quoted = false
        for byte in csv {
            if byte == quote { quoted.toggle() }
            if byte == UInt8(ascii: "\n") && !quoted { out.append(UInt8(ascii: "\r")) }
            out.append(byte)
        }
        return out
    }

    /// One database for all cases: the oracle and the gateway read the same rows.
    static func server(parallelism: Int = 1) async throws -> TestServer {
        try await (parallelism == 1 ? Shared.server : Shared.parallelServer).get()
    }

    /// Exports read by `parallelism` COPYs however small the table.
    static func parallel(_ parallelism: Int) -> @Sendable (inout Configuration) -> Void {
        { configuration in
            configuration.exports.parallelism = parallelism
            configuration.exports.minRowsPerPiece = 1
        }
    }
}

/// Servers shared by the read-only oracle tests, each started once: one
/// COPY per export, and three.
enum Shared {
    static let server = Lazy { try await TestServer.start(rows: 4000, exportsTuning: CSVOracleTests.parallel(1)) }
    static let parallelServer = Lazy { try await TestServer.start(rows: 4000, exportsTuning: CSVOracleTests.parallel(3)) }
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
