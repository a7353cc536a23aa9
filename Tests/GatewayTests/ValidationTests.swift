import Foundation
import Testing

/// Bad input gets a clear 400 naming the parameter, and starts nothing.
struct ValidationTests {
    static let bad: [(query: String, parameter: String)] = [
        ("colour=red", "colour"),
        ("country_code=USA", "country_code"),
        ("country_code=U1", "country_code"),
        ("country_code=", "country_code"),
        ("country_code=US,,DE", "country_code"),
        ("subscription_tier=gold", "subscription_tier"),
        ("min_ltv=abc", "min_ltv"),
        ("min_ltv=", "min_ltv"),
        ("min_ltv=1e5", "min_ltv"),
        ("min_ltv=1;DROP%20TABLE%20users", "min_ltv"),
        ("min_ltv=1&min_ltv=2", "min_ltv"),
        ("columns=id,password", "columns"),
        ("columns=id,id", "columns"),
        ("columns=", "columns"),
        ("delimiter=ab", "delimiter"),
        ("delimiter=%0A", "delimiter"),
        ("delimiter=%0D", "delimiter"),
        ("delimiter=%00", "delimiter"),
        // Greek question mark, which a Swift String compares equal to ";": two bytes.
        ("delimiter=%CD%BE", "delimiter"),
        ("delimiter=%C3%A9", "delimiter"),
        ("quoteChar=%2C%CC%81", "quoteChar"),
        ("delimiter=%FF", "delimiter"),
        ("quoteChar=", "quoteChar"),
        ("quoteChar=%0A", "quoteChar"),
        ("quoteChar=%0D", "quoteChar"),
        ("delimiter=%22", "quoteChar"),
        ("country_code=%ZZ", "country_code"),
        ("header=maybe", "header"),
        ("bom=2", "bom"),
        ("excel=", "excel"),
        ("lineEnding=cr", "lineEnding"),
        ("nullAs=a,b", "nullAs"),
        ("nullAs=%22", "nullAs"),
        ("nullAs=%0A", "nullAs"),
        ("nullAs=%0D%0A", "nullAs"),
        // One Character, three code points: the comma is still a byte of it.
        ("nullAs=%2C%CC%81", "nullAs"),
        // One letter and 20 combining marks: one Character, 41 bytes.
        ("nullAs=a" + String(repeating: "%CC%81", count: 20), "nullAs"),
        ("nullAs=%00", "nullAs"),
        ("columns=id%E2%80%8D", "columns"),
        ("country_code=U%CC%81S", "country_code"),
    ]

    @Test func badParametersAre400WithTheParameterNamedAndStartNothing() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        for (query, parameter) in Self.bad {
            for method in ["POST", "GET"] {
                let result = try await curl(server.url("/exports/csv?\(query)"), method: method)
                #expect(result.status == 400, "\(method) \(query)")
                #expect(result.headers["content-type"]?.hasPrefix("application/json") == true)
                #expect(result.json["parameter"] as? String == parameter, "\(query)")
                #expect((result.json["message"] as? String)?.isEmpty == false)
            }
        }
        #expect(server.files(in: "partial").isEmpty && server.files(in: "objects").isEmpty)
        let exports = try await server.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%'")
        #expect(exports[0][0] == "0")
        // The table is still there after the hostile min_ltv.
        #expect(try await server.sql("SELECT count(*) FROM users")[0][0] == "3000")
    }

    @Test func minLtvZeroIsARealFilterAndQuotesInValuesAreData() async throws {
        let server = try await Shared.server.get()
        let zero = try await curl(server.url("/exports/csv?min_ltv=0&columns=id,lifetime_value"))
        #expect(zero.body == (try await server.psqlCopy("SELECT id, lifetime_value FROM users WHERE lifetime_value >= 0 ORDER BY id")))
        let high = try await curl(server.url("/exports/csv?min_ltv=9000&columns=id,lifetime_value"))
        #expect(high.body == (try await server.psqlCopy("SELECT id, lifetime_value FROM users WHERE lifetime_value >= 9000 ORDER BY id")))
        #expect(high.body.count < zero.body.count)
    }

    @Test func unknownExportsAndPathsAre404AndNeverFiles() async throws {
        let server = try await Shared.server.get()
        for path in [
            "/exports/\(UUID().uuidString.lowercased())/status",
            "/exports/\(UUID().uuidString.lowercased())/download",
            "/exports/not-an-id/status",
            "/exports/..%2F..%2F..%2Fetc%2Fpasswd/download",
            "/exports/%2e%2e/download",
            "/nothing-here",
        ] {
            let result = try await curl(server.url(path), ["--path-as-is"])
            #expect(result.status == 404, "\(path)")
            #expect(result.json["error"] as? String == "not_found", "\(path)")
        }
        #expect(try await curl(server.url("/exports/\(UUID().uuidString)"), method: "DELETE").status == 404)
    }

    @Test func otherMethodsOnKnownPathsAre405WithAllow() async throws {
        let server = try await Shared.server.get()
        let id = UUID().uuidString.lowercased()
        for (method, path, allow) in [
            ("PUT", "/exports/csv", "GET, POST"), ("DELETE", "/exports/csv", "GET, POST"), ("POST", "/health", "GET, HEAD"), ("POST", "/metrics", "GET"),
            ("POST", "/exports/\(id)/download", "GET, HEAD"), ("PATCH", "/exports/\(id)/status", "GET, HEAD"), ("GET", "/exports/\(id)", "DELETE"),
        ] {
            let result = try await curl(server.url(path), method: method)
            #expect(result.status == 405, "\(method) \(path)")
            #expect(result.headers["allow"] == allow, "\(method) \(path)")
        }
    }
}
