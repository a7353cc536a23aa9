import Foundation
import Testing

@testable import Gateway

/// `GET /exports` (the caller's exports, newest first, by cursor), the
/// download paths in one form (`/download.csv`, `/download.csv.gz`) and the
/// page's static files, on the wire with curl.
@Suite(.serialized) struct ExportListTests {
    static func ids(_ result: CurlResult) -> [String] {
        ((result.json["exports"] as? [[String: Any]]) ?? []).compactMap { $0["exportId"] as? String }
    }

    /// Every page from the first, following `nextCursor`: the ids in order.
    static func allPages(_ server: TestServer, limit: Int, _ options: [String] = []) async throws -> [String] {
        var ids: [String] = []
        var cursor: String?
        for _ in 0..<50 {
            let path = "/exports?limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? "")
            let page = try await curl(server.url(path), options)
            #expect(page.status == 200, "\(path): \(page.status)")
            ids += Self.ids(page)
            cursor = page.json["nextCursor"] as? String
            if let cursor {
                #expect(page.headers["link"] == "</exports?limit=\(limit)&cursor=\(cursor)>; rel=\"next\"")
            } else {
                #expect(page.headers["link"] == nil)
                return ids
            }
        }
        Issue.record("more than 50 pages")
        return ids
    }

    @Test(.timeLimit(.minutes(2)))
    func pagesListEveryExportOnceNewestFirstWhateverIsMadeOrDeletedBetweenThem() async throws {
        let server = try await TestServer.start(rows: 500)
        defer { Task { await server.stop() } }
        #expect(Self.ids(try await curl(server.url("/exports"))) == [])
        var made: [String] = []
        for country in ["US", "DE", "FR", "GB", "JP", "BR", "IN"] {
            let created = try await curl(server.url("/exports/csv?country_code=\(country)&columns=id,email"), method: "POST")
            made.append(try #require(created.json["exportId"] as? String))
        }
        let newestFirst = Array(made.reversed())
        #expect(try await Self.allPages(server, limit: 3) == newestFirst)
        #expect(try await Self.allPages(server, limit: 100) == newestFirst)

        // Each entry is the status JSON, with a fresh signed link and the normalised query.
        let first = try await curl(server.url("/exports?limit=1"))
        #expect(first.headers["cache-control"] == "no-store")
        let entry = try #require((first.json["exports"] as? [[String: Any]])?.first)
        #expect(entry["query"] as? String == "country_code=IN&columns=id%2Cemail&delimiter=%2C&quoteChar=%22&header=true&bom=false&lineEnding=lf")
        #expect((entry["downloadUrl"] as? String)?.hasPrefix("/exports/\(newestFirst[0])/download?expires=") == true)
        let status = try await curl(server.url("/exports/\(newestFirst[0])/status")).json
        #expect(status["query"] as? String == entry["query"] as? String)
        // A page's cursor still holds after newer exports are made and the
        // export it ends at is deleted: nothing repeats, nothing is skipped.
        let page1 = try await curl(server.url("/exports?limit=3"))
        let cursor = try #require(page1.json["nextCursor"] as? String)
        let newer = try #require(try await curl(server.url("/exports/csv?columns=id"), method: "POST").json["exportId"] as? String)
        try await eventually("completion") { try await curl(server.url("/exports/\(newestFirst[2])/status")).json["status"] as? String == "completed" }
        #expect(try await curl(server.url("/exports/\(newestFirst[2])"), method: "DELETE").status == 204)
        let page2 = try await curl(server.url("/exports?limit=3&cursor=\(cursor)"))
        #expect(Self.ids(page2) == Array(newestFirst[3...5]))
        #expect(try await Self.allPages(server, limit: 2) == [newer] + newestFirst.filter { $0 != newestFirst[2] })
        // A cursor past the oldest is an empty last page.
        let last = try await curl(server.url("/exports?limit=100")).json
        #expect(last["nextCursor"] is NSNull)

        // A code or tier named twice is kept once, where it first came.
        let repeated = try await curl(server.url("/exports/csv?country_code=us,US,us&country_code=de&subscription_tier=pro,PRO&columns=id"), method: "POST")
        #expect((repeated.json["query"] as? String)?.hasPrefix("country_code=US%2CDE&subscription_tier=pro&columns=id&") == true, "\(repeated.json)")
    }

    @Test(.timeLimit(.minutes(2)))
    func badListParametersAre400NamingThemAndHeadersAndMethodsAreChecked() async throws {
        let server = try await TestServer.start(rows: 200)
        defer { Task { await server.stop() } }
        let someID = UUID().uuidString.lowercased()
        let cases: [(String, String)] = [
            ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=", "limit"), ("limit=%2B5", "limit"),
            ("limit=0010", "limit"), ("limit=01", "limit"), ("cursor=01_\(someID)", "cursor"), ("cursor=1_\(someID.uppercased())", "cursor"), ("limit=1&limit=2", "limit"), ("cursor=abc", "cursor"),
            ("cursor=", "cursor"),
            ("cursor=1_\(someID.uppercased())x", "cursor"), ("cursor=-1_\(someID)", "cursor"), ("cursor=1234567890123456789_\(someID)", "cursor"),
            ("status=running", "status"), ("limit=5&x=1", "x"), ("%ZZ=1", "%ZZ"),
        ]
        for (query, parameter) in cases {
            let result = try await curl(server.url("/exports?\(query)"))
            #expect(result.status == 400, "\(query)")
            #expect(result.json["error"] as? String == "invalid_parameter", "\(query)")
            #expect(result.json["parameter"] as? String == parameter, "\(query): \(result.json)")
        }
        // A valid cursor naming an export that never existed is just a position.
        #expect(try await curl(server.url("/exports?cursor=0_\(someID)")).status == 200)
        let valid = try await curl(server.url("/exports?cursor=1_\(someID)"))
        #expect(valid.status == 200 && Self.ids(valid) == [])
        // A signed link's parameters on the list are a bad link, as anywhere but a download.
        #expect(try await curl(server.url("/exports?expires=1&signature=00")).status == 403)
        let post = try await curl(server.url("/exports"), method: "POST")
        #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
        let head = try await curl(server.url("/exports?limit=1"), method: "HEAD", ["-I"])
        #expect(head.status == 200 && head.headers["content-type"] == "application/json; charset=utf-8")
        for path in ["/health", "/openapi.json"] {
            #expect(try await curl(server.url(path), method: "HEAD", ["-I"]).status == 200, "HEAD \(path)")
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func withTokensEachTokenListsOnlyItsOwnExports() async throws {
        let server = try await AccessTests.server(rows: 300)
        defer { Task { await server.stop() } }
        var mine: [String: [String]] = [AccessTests.alice: [], AccessTests.bob: []]
        for (index, token) in [AccessTests.alice, AccessTests.bob, AccessTests.alice, AccessTests.bob, AccessTests.alice].enumerated() {
            // Two identical requests of different owners share a run, not a listing.
            let query = index < 2 ? "columns=id" : "columns=id,email&min_ltv=\(index)"
            let created = try await curl(server.url("/exports/csv?\(query)"), method: "POST", AccessTests.bearer(token))
            mine[token, default: []].insert(try #require(created.json["exportId"] as? String), at: 0)
        }
        for token in [AccessTests.alice, AccessTests.bob] {
            #expect(try await Self.allPages(server, limit: 2, AccessTests.bearer(token)) == mine[token])
        }
        #expect(try await curl(server.url("/exports")).status == 401)
        #expect(try await curl(server.url("/exports"), AccessTests.bearer("not-a-known-token-123456")).status == 401)
        // A cursor of alice's page given by bob lists bob's exports after that point, never alice's.
        let alicePage = try await curl(server.url("/exports?limit=1"), AccessTests.bearer(AccessTests.alice))
        let cursor = try #require(alicePage.json["nextCursor"] as? String)
        let bobs = Self.ids(try await curl(server.url("/exports?cursor=\(cursor)"), AccessTests.bearer(AccessTests.bob)))
        #expect(Set(bobs).isSubset(of: Set(mine[AccessTests.bob] ?? [])))
        // The page needs no token to load; the API behind it does.
        #expect(try await curl(server.url("/")).status == 200)
        #expect(try await curl(server.url("/ui/page.js")).status == 200)
    }

    @Test(.timeLimit(.minutes(2)))
    func downloadCsvAndCsvGzServeOneFormWhateverTheBrowserAsksWithTheSameSignedLink() async throws {
        let server = try await AccessTests.server(rows: 4000)
        defer { Task { await server.stop() } }
        let (id, link, bytes) = try await SignedLinkTests.completed(server)
        let query = try #require(link.split(separator: "?", maxSplits: 1).last)
        let browser = ["-H", "Accept-Encoding: gzip, deflate, br, zstd"]
        let status = try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).json
        let sha = try #require(status["sha256"] as? String)
        let day = SignedLinkTests.utcDay()

        // `.csv`: the CSV, never encoded, even to a client that prefers gzip.
        let csv = try await curl(server.url("/exports/\(id)/download.csv?\(query)"), browser)
        #expect(csv.status == 200 && csv.body == bytes)
        #expect(csv.headers["content-encoding"] == nil && csv.headers["vary"] == nil)
        #expect(csv.headers["etag"] == "\"\(sha)\"")
        #expect(csv.headers["content-disposition"] == "attachment; filename=\"users-\(day)-\(id.prefix(8)).csv\"")
        // A browser's resume: Range with If-Range of the ETag it saved.
        let resumed = try await curl(server.url("/exports/\(id)/download.csv?\(query)"), ["-H", "Range: bytes=100-", "-H", "If-Range: \"\(sha)\"", "-H", "Accept-Encoding: identity"])
        #expect(resumed.status == 206 && resumed.body == bytes.dropFirst(100))

        // `.csv.gz`: the gzip form as a file, not as an encoding a client would undo.
        let gz = try await curl(server.url("/exports/\(id)/download.csv.gz?\(query)"), ["-H", "Accept-Encoding: identity"])
        #expect(gz.status == 200)
        #expect(gz.headers["content-type"] == "application/gzip" && gz.headers["content-encoding"] == nil)
        #expect(gz.headers["content-disposition"] == "attachment; filename=\"users-\(day)-\(id.prefix(8)).csv.gz\"")
        #expect(gz.body.prefix(2) == Data([0x1f, 0x8b]))
        let unpacked = try await run("/bin/sh", ["-c", "gzip -dc < \"$0\"", try Self.write(gz.body)])
        #expect(unpacked.stdout == bytes)
        // The first asked for it, so it was sent as it was made (no validators yet); now it is a finished file.
        var gzSha = ""
        try await eventually("the gzip form") {
            gzSha = try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).json["gzipSha256"] as? String ?? ""
            return !gzSha.isEmpty
        }
        let finished = try await curl(server.url("/exports/\(id)/download.csv.gz?\(query)"))
        #expect(finished.body == gz.body && finished.headers["etag"] == "\"\(gzSha)\"")
        #expect(finished.headers["content-type"] == "application/gzip" && finished.headers["content-encoding"] == nil)
        // The same bytes as `/download` negotiates, with its ranges.
        let negotiated = try await curl(server.url("/exports/\(id)/download?\(query)"), ["-H", "Accept-Encoding: gzip"])
        #expect(negotiated.headers["content-encoding"] == "gzip" && negotiated.body == gz.body)
        let part = try await curl(server.url("/exports/\(id)/download.csv.gz?\(query)"), ["-H", "Range: bytes=-10"])
        #expect(part.status == 206 && part.body == gz.body.suffix(10))
        let head = try await curl(server.url("/exports/\(id)/download.csv.gz?\(query)"), method: "HEAD", ["-I"])
        #expect(head.status == 200 && head.headers["content-length"] == String(gz.body.count))

        // With the token instead of a link; a link altered in its path is refused.
        #expect(try await curl(server.url("/exports/\(id)/download.csv"), AccessTests.bearer(AccessTests.alice)).body == bytes)
        #expect(try await curl(server.url("/exports/\(id)/download.csv")).status == 401)
        #expect(try await curl(server.url("/exports/\(id)/download.csvx?\(query)")).status == 403)
        #expect(try await curl(server.url("/exports/\(id)/download.csv.gz"), AccessTests.bearer(AccessTests.bob)).status == 404)
    }

    @Test(.timeLimit(.minutes(1)))
    func thePageIsServedWithItsOwnFilesOnlyAndRevalidates() async throws {
        let server = try await TestServer.start(rows: 100)
        defer { Task { await server.stop() } }
        let page = try await curl(server.url("/"))
        #expect(page.status == 200)
        #expect(page.headers["content-type"] == "text/html; charset=utf-8")
        let html = String(decoding: page.body, as: UTF8.self)
        #expect(html.contains("<script src=\"/ui/page.js\" defer></script>") && html.contains("/ui/page.css"))
        // Nothing from another origin, no inline script a policy would have to allow.
        #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("<script>"))
        let policy = try #require(page.headers["content-security-policy"])
        #expect(policy.contains("default-src 'none'") && policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"))
        #expect(page.headers["x-content-type-options"] == "nosniff" && page.headers["referrer-policy"] == "no-referrer")
        let etag = try #require(page.headers["etag"])
        let again = try await curl(server.url("/"), ["-H", "If-None-Match: \(etag)"])
        #expect(again.status == 304 && again.body.isEmpty)
        for (path, type) in [("/ui/page.js", "text/javascript; charset=utf-8"), ("/ui/page.css", "text/css; charset=utf-8")] {
            let asset = try await curl(server.url(path))
            #expect(asset.status == 200 && asset.headers["content-type"] == type && !asset.body.isEmpty, "\(path)")
            let head = try await curl(server.url(path), method: "HEAD", ["-I"])
            #expect(head.status == 200 && head.headers["content-length"] == String(asset.body.count), "\(path)")
        }
        // Gzipped to a client that asks (curl decodes it): the same bytes,
        // smaller on the wire, an ETag of its own that revalidates only that form.
        for path in ["/", "/ui/page.js", "/ui/page.css"] {
            let plain = try await curl(server.url(path))
            let gzip = try await curl(server.url(path), ["--compressed"])
            #expect(plain.headers["content-encoding"] == nil && plain.headers["vary"] == "Accept-Encoding", "\(path)")
            #expect(gzip.headers["content-encoding"] == "gzip" && gzip.headers["vary"] == "Accept-Encoding", "\(path)")
            #expect(gzip.body == plain.body, "\(path)")
            let gzipTag = try #require(gzip.headers["etag"])
            #expect(gzipTag != plain.headers["etag"], "\(path)")
            let head = try await curl(server.url(path), method: "HEAD", ["-I", "-H", "Accept-Encoding: gzip"])
            #expect(Int(head.headers["content-length"] ?? "") ?? .max < plain.body.count / 2, "\(path)")
            #expect(try await curl(server.url(path), ["--compressed", "-H", "If-None-Match: \(gzipTag)"]).status == 304, "\(path)")
            #expect(try await curl(server.url(path), ["-H", "If-None-Match: \(gzipTag)"]).status == 200, "\(path)")
        }
        let js = String(decoding: try await curl(server.url("/ui/page.js")).body, as: UTF8.self)
        #expect(!js.contains("innerHTML") && !js.contains("localStorage.setItem") && !js.contains("eval("))
        #expect(try await curl(server.url("/ui/other.js")).status == 404)
        let post = try await curl(server.url("/"), method: "POST")
        #expect(post.status == 405 && post.headers["allow"] == "GET, HEAD")
    }

    static func write(_ data: Data) throws -> String {
        let path = NSTemporaryDirectory() + "list-\(UUID().uuidString).bin"
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }
}
