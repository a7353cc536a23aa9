import Foundation
import Testing

@testable import Gateway

/// API tokens and ownership, on the wire with curl: every export request
/// needs a known token; an export is seen only by the token that made it
/// (another token gets the 404 of an id that does not exist); tokens are
/// never stored, logged or echoed.
@Suite(.serialized) struct AccessTests {
    static let alice = "alice-secret-token-0123456789"
    static let bob = "Bob+Secret/Token~0123456789=="

    static func server(rows: Int = 2000, databaseURL: String? = nil, log: CapturedLog? = nil, tuning: @escaping (inout Configuration) -> Void = { _ in }) async throws -> TestServer {
        try await TestServer.start(rows: rows, databaseURL: databaseURL, seed: databaseURL == nil, logHandler: log) { configuration in
            configuration.access.tokens = (try? APITokens.parse(list: "alice:\(Self.alice), \(Self.bob)", file: nil)) ?? APITokens(tokens: [])
            tuning(&configuration)
        }
    }

    static func bearer(_ token: String) -> [String] { ["-H", "Authorization: Bearer \(token)"] }

    @Test(.timeLimit(.minutes(2)))
    func everyExportRequestNeedsAKnownToken() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let someID = UUID().uuidString.lowercased()
        let requests: [(String, String)] = [
            ("POST", "/exports/csv"), ("GET", "/exports/csv"), ("GET", "/exports/\(someID)/status"), ("HEAD", "/exports/\(someID)/status"),
            ("GET", "/exports/\(someID)/download"), ("DELETE", "/exports/\(someID)"), ("GET", "/exports/nothing-here"), ("GET", "//exports/csv"),
            ("GET", "/exports"), ("PUT", "/exports/csv"),
        ]
        for (method, path) in requests {
            for (options, given) in [
                ([String](), false), (Self.bearer("not-a-known-token-123456"), true), (["-H", "Authorization: Basic YWxpY2U6eA=="], true),
                (Self.bearer(Self.alice + "x"), true), (Self.bearer(String(Self.alice.dropLast())), true),
            ] {
                let result = try await curl(server.url(path), method: method, method == "HEAD" ? ["-I"] + options : options)
                #expect(result.status == 401, "\(method) \(path) \(options)")
                let challenge = result.headers["www-authenticate"] ?? ""
                #expect(challenge.hasPrefix("Bearer realm=\"csv-export-gateway\""), "\(method) \(path)")
                #expect(challenge.contains("invalid_token") == given, "\(method) \(path)")
                #expect(!String(decoding: result.body, as: UTF8.self).contains("token-123456"))
            }
        }
        // Public: health (which says how the API is protected) and the OpenAPI document.
        let health = try await curl(server.url("/health"))
        #expect(health.status == 200)
        #expect(health.json["access"] as? String == "tokens")
        #expect(try await curl(server.url("/openapi.json")).status == 200)
        // The scheme is case-insensitive (RFC 9110); a named and a bare token both work.
        #expect(try await curl(server.url("/exports/\(someID)/status"), ["-H", "Authorization: bearer \(Self.alice)"]).status == 404)
        #expect(try await curl(server.url("/exports/\(someID)/status"), Self.bearer(Self.bob)).status == 404)
        // A filter value that happens to spell a link's parameter name is just a value.
        #expect(try await curl(server.url("/exports/csv?nullAs=expires"), method: "POST", Self.bearer(Self.alice)).status == 202)
        #expect(try await server.sql("SELECT count(*) FROM gateway.exports").first?.first == "1")
        _ = try await server.sql("DELETE FROM gateway.exports")
        // Nothing was created by any of the refused requests.
        #expect(try await server.sql("SELECT count(*) FROM gateway.exports").first?.first == "0")
    }

    @Test(.timeLimit(.minutes(3)))
    func anExportIsSeenOnlyByTheTokenThatMadeItEvenAfterARestart() async throws {
        let server = try await Self.server()
        let created = try await curl(server.url("/exports/csv?country_code=US"), method: "POST", Self.bearer(Self.alice))
        #expect(created.status == 202)
        let id = try #require(created.json["exportId"] as? String)
        try await eventually("completion") {
            try await curl(server.url("/exports/\(id)/status"), Self.bearer(Self.alice)).json["status"] as? String == "completed"
        }
        // The same request from bob joins the same run (one file) under an id of his own.
        let bobs = try await curl(server.url("/exports/csv?country_code=US"), method: "POST", Self.bearer(Self.bob))
        let bobID = try #require(bobs.json["exportId"] as? String)
        #expect(bobID != id)
        try await eventually("bob's completion") {
            try await curl(server.url("/exports/\(bobID)/status"), Self.bearer(Self.bob)).json["status"] as? String == "completed"
        }
        let aliceStatus = try await curl(server.url("/exports/\(id)/status"), Self.bearer(Self.alice)).json
        let bobStatus = try await curl(server.url("/exports/\(bobID)/status"), Self.bearer(Self.bob)).json
        #expect(aliceStatus["sha256"] as? String == bobStatus["sha256"] as? String)

        try await Self.expectOnlyOwnerSees(server: server, id: id, owner: Self.alice, other: Self.bob)
        try await Self.expectOnlyOwnerSees(server: server, id: bobID, owner: Self.bob, other: Self.alice)

        // The journal keeps the token's id, never the token.
        let rows = try await server.sql("SELECT id::text, coalesce(owner, '') FROM gateway.exports ORDER BY owner")
        #expect(rows.contains { $0 == [id, "alice"] })
        let bobOwner = try #require(rows.first { $0.first == bobID }?.last ?? nil)
        #expect(bobOwner.hasPrefix("t-") && bobOwner.utf8.count == 18)
        let everything = try await server.sql("SELECT t::text FROM gateway.exports t")
        #expect(!everything.flatMap { $0 }.contains { ($0 ?? "").contains("secret") || ($0 ?? "").contains("Secret") })

        // After a restart (journal read back) ownership holds.
        await server.stop(keepingCache: true)
        let again = try await Self.server(databaseURL: server.databaseURL) { $0.cache.directory = server.cacheDirectory }
        defer { Task { await again.stop() } }
        try await Self.expectOnlyOwnerSees(server: again, id: id, owner: Self.alice, other: Self.bob)
        // Another owner's delete changes nothing; the owner's deletes.
        #expect(try await curl(again.url("/exports/\(id)"), method: "DELETE", Self.bearer(Self.bob)).status == 404)
        #expect(try await curl(again.url("/exports/\(id)/status"), Self.bearer(Self.alice)).status == 200)
        #expect(try await curl(again.url("/exports/\(id)"), method: "DELETE", Self.bearer(Self.alice)).status == 204)
        #expect(try await curl(again.url("/exports/\(bobID)/download"), Self.bearer(Self.bob)).status == 200)
    }

    /// The owner gets the export; the other token gets exactly what an id
    /// that does not exist gets, for every route.
    static func expectOnlyOwnerSees(server: TestServer, id: String, owner: String, other: String) async throws {
        let missing = UUID().uuidString.lowercased()
        for (method, suffix) in [("GET", "/status"), ("GET", "/download"), ("HEAD", "/download")] {
            let mine = try await curl(server.url("/exports/\(id)\(suffix)"), method: method, (method == "HEAD" ? ["-I"] : []) + Self.bearer(owner))
            #expect(mine.status == 200, "\(method) \(suffix)")
            let theirs = try await curl(server.url("/exports/\(id)\(suffix)"), method: method, (method == "HEAD" ? ["-I"] : []) + Self.bearer(other))
            let nobodys = try await curl(server.url("/exports/\(missing)\(suffix)"), method: method, (method == "HEAD" ? ["-I"] : []) + Self.bearer(other))
            #expect(theirs.status == 404, "\(method) \(suffix)")
            // (curl -I writes the head as its output, which differs by request id and date.)
            if method == "GET" { #expect(theirs.body == nobodys.body, "\(method) \(suffix)") }
            #expect(theirs.headers["content-length"] == nobodys.headers["content-length"])
        }
    }

    @Test func withoutTokensTheGatewayServesOnlyOnLoopbackUnlessAnonymousIsAllowed() throws {
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["HOST": "0.0.0.0"]) }
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["HOST": "192.168.1.5", "ALLOW_ANONYMOUS": "false"]) }
        #expect(try Configuration(environment: ["HOST": "0.0.0.0", "ALLOW_ANONYMOUS": "true"]).access.allowAnonymous)
        #expect(try Configuration(environment: ["HOST": "0.0.0.0", "API_TOKENS": "ops:\(Self.alice)"]).access.tokens.tokens.map(\.id) == ["ops"])
        for loopback in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] {
            #expect(try Configuration(environment: ["HOST": loopback]).access.tokens.isEmpty)
        }
        // Bad tokens are refused at start, without repeating them.
        for bad in [
            "demo:change-me-0123456789abcdef", "t-0123456789abcdef:\(Self.alice)", "shortSecret", "name with space:\(Self.alice)", "x:has spaces in the token 1234", "\(Self.alice),\(Self.alice)",
            "a:\(Self.alice),a:\(Self.bob)",
        ] {
            do {
                _ = try Configuration(environment: ["API_TOKENS": bad])
                Issue.record("accepted API_TOKENS=\(bad)")
            } catch {
                #expect(!error.description.contains("Secret") && !error.description.contains("secret") && !error.description.contains("1234"), "\(error)")
            }
        }
        // A tokens file: comments, blank lines and CRLF are fine.
        let file = try temporaryDirectory("tokens") + "/tokens"
        try "# ops team\r\nops:\(Self.alice)\r\n\r\n\(Self.bob)\n".write(toFile: file, atomically: true, encoding: .utf8)
        let ids = try Configuration(environment: ["API_TOKENS_FILE": file]).access.tokens.tokens.map(\.id)
        #expect(ids.count == 2 && ids[0] == "ops" && ids[1].hasPrefix("t-"))
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["API_TOKENS_FILE": file + ".missing"]) }
    }

    @Test(.timeLimit(.minutes(2)))
    func theBinaryRefusesToStartOpenOnANonLoopbackAddress() async throws {
        let result = try await run(RestartTests.binary, [], environment: ["HOST": "0.0.0.0", "PORT": "0", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("ALLOW_ANONYMOUS"))
    }

    /// The test PostgreSQL is started by scripts/lib.sh as `scripts/run.sh`
    /// starts its private one: over TCP it needs the password (SCRAM).
    @Test(.timeLimit(.minutes(1)))
    func thePrivatePostgreSQLWantsItsPassword() async throws {
        let url = TestServer.adminURL
        guard let at = url.firstIndex(of: "@"), let colon = url[..<at].lastIndex(of: ":"),
            url[url.index(after: colon)..<at].utf8.count >= 32
        else {
            Issue.record("TEST_DATABASE_URL has no generated password: run the tests with scripts/test.sh")
            return
        }
        let withoutPassword = String(url[..<colon]) + String(url[at...])
        let refused = try await run(TestServer.psql, ["-X", "-w", "-d", withoutPassword, "-c", "SELECT 1"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("password"), "\(refused.stderr)")
        let wrong = String(url[..<colon]) + ":not-the-password" + String(url[at...])
        #expect(try await run(TestServer.psql, ["-X", "-w", "-d", wrong, "-c", "SELECT 1"]).status != 0)
        #expect(try await run(TestServer.psql, ["-X", "-w", "-d", url, "-c", "SELECT 1"]).status == 0)
    }

    @Test func tokensAreComparedByTheirWholeHash() throws {
        let tokens = try APITokens.parse(list: "alice:\(Self.alice),\(Self.bob)", file: nil)
        #expect(tokens.owner(authorization: "Bearer \(Self.alice)") == "alice")
        #expect(tokens.owner(authorization: "BEARER  \(Self.alice) ") == "alice")
        #expect(tokens.owner(authorization: "Bearer \(Self.bob)")?.hasPrefix("t-") == true)
        for wrong in ["", "Bearer", "Bearer ", "Bearer alice", "Basic \(Self.alice)", "Bearer \(Self.alice)\u{0}", "Bearer \(Self.alice.uppercased())", "Token \(Self.alice)"] {
            #expect(tokens.owner(authorization: wrong) == nil, "\(wrong)")
        }
    }
}
