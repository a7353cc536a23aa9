import Foundation
import Testing

/// Downloads of a completed export: ranges, resume, conditional requests, gzip.
@Suite(.serialized) struct DownloadTests {
    /// A completed export on the shared server, and its bytes.
    static func completed() async throws -> (server: TestServer, id: String, bytes: Data) {
        let server = try await Shared.server.get()
        let created = try await curl(server.url("/exports/csv"))
        let id = try #require(created.headers["x-export-id"])
        try await eventually("completion") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "completed" }
        return (server, id, created.body)
    }

    @Test func singleRangesAnswer206WithContentRange() async throws {
        let (server, id, bytes) = try await Self.completed()
        let url = server.url("/exports/\(id)/download")
        let size = bytes.count
        let cases: [(String, Range<Int>)] = [
            ("bytes=0-99", 0..<100), ("bytes=100-", 100..<size), ("bytes=-250", (size - 250)..<size),
            ("bytes=\(size - 10)-\(size + 500)", (size - 10)..<size), ("bytes=7-7", 7..<8),
        ]
        for (header, range) in cases {
            let result = try await curl(url, ["-H", "Range: \(header)"])
            #expect(result.status == 206, "\(header)")
            #expect(result.headers["content-range"] == "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)", "\(header)")
            #expect(result.body == bytes.subdata(in: range), "\(header)")
        }
        let unsatisfiable = try await curl(url, ["-H", "Range: bytes=\(size)-"])
        #expect(unsatisfiable.status == 416)
        #expect(unsatisfiable.headers["content-range"] == "bytes */\(size)")
        for ignored in ["bytes=abc", "items=0-5", "bytes=5-1", "bytes=0-1,,5-6"] {
            let result = try await curl(url, ["-H", "Range: \(ignored)"])
            #expect(result.status == 200, "\(ignored) is ignored")
            #expect(result.body == bytes)
        }
    }

    @Test func ifRangeAndIfNoneMatchUseTheStrongETag() async throws {
        let (server, id, bytes) = try await Self.completed()
        let url = server.url("/exports/\(id)/download")
        let etag = try #require(try await curl(url, ["-r", "0-0"]).headers["etag"])
        #expect(etag.hasPrefix("\"") && !etag.hasPrefix("W/"))
        let matching = try await curl(url, ["-H", "Range: bytes=10-19", "-H", "If-Range: \(etag)"])
        #expect(matching.status == 206)
        let stale = try await curl(url, ["-H", "Range: bytes=10-19", "-H", "If-Range: \"something-else\""])
        #expect(stale.status == 200)
        #expect(stale.body == bytes)
        let notModified = try await curl(url, ["-H", "If-None-Match: \(etag)"])
        #expect(notModified.status == 304)
        #expect(notModified.body.isEmpty)
    }

    @Test(arguments: [1, 4096, 100_000])
    func curlResumesAnInterruptedDownload(at offset: Int) async throws {
        let (server, id, bytes) = try await Self.completed()
        let url = server.url("/exports/\(id)/download")
        let path = NSTemporaryDirectory() + "resume-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try bytes.prefix(offset).write(to: URL(fileURLWithPath: path))
        let resumed = try await run("curl", ["-s", "-S", "-f", "-C", "-", "-o", path, url])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes)
    }

    @Test func multipleRangesAndIfRangeWithPythonHTTPClient() async throws {
        let (server, id, bytes) = try await Self.completed()
        let path = NSTemporaryDirectory() + "expected-\(id).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try bytes.write(to: URL(fileURLWithPath: path))
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/multirange.py").path
        let result = try await run("python3", [script, server.url("/exports/\(id)/download"), path])
        #expect(result.status == 0, "\(result.text)\(result.stderr)")
        #expect(result.text.hasSuffix("all checks passed\n"))
    }

    @Test func headSendsTheHeadersOfGetWithoutABody() async throws {
        let (server, id, bytes) = try await Self.completed()
        let get = try await curl(server.url("/exports/\(id)/download"))
        let head = try await curl(server.url("/exports/\(id)/download"), method: "HEAD", ["-I"])
        #expect(head.exitCode == 0)
        #expect(head.status == 200)
        // Python's http.client reads the HEAD response and finds no body after it.
        let script =
            "import http.client,sys,urllib.parse as p; u=p.urlsplit(sys.argv[1]); c=http.client.HTTPConnection(u.hostname,u.port); c.request('HEAD',u.path); r=c.getresponse(); print(r.status, len(r.read()))"
        #expect(try await run("python3", ["-c", script, server.url("/exports/\(id)/download")]).text == "200 0\n")
        #expect(head.headers["content-length"] == String(bytes.count))
        for name in ["etag", "content-type", "accept-ranges", "repr-digest", "content-disposition"] {
            #expect(head.headers[name] == get.headers[name], "\(name)")
        }
    }

    @Test func reprDigestIsTheSHA256OfTheRepresentation() async throws {
        let (server, id, bytes) = try await Self.completed()
        let result = try await curl(server.url("/exports/\(id)/download"))
        let path = NSTemporaryDirectory() + "digest-\(id).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try bytes.write(to: URL(fileURLWithPath: path))
        let digest = try await run("sh", ["-c", "openssl dgst -sha256 -binary \"$0\" | base64", path]).text.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(result.headers["repr-digest"] == "sha-256=:\(digest):")
    }

    @Test func gzipFormIsMadeOnceAndResumesLikeTheCSV() async throws {
        let (server, id, bytes) = try await Self.completed()
        let url = server.url("/exports/\(id)/download")
        // The first gzip reader may follow the gzip form as it is made.
        let first = try await curl(url, ["--compressed"])
        #expect(first.exitCode == 0)
        #expect(first.headers["content-encoding"] == "gzip")
        #expect(first.headers["vary"] == "Accept-Encoding")
        #expect(first.body == bytes)
        try await eventually("gzip form published") { try await curl(server.url("/exports/\(id)/status")).json["gzipSha256"] is String }
        let status = try await curl(server.url("/exports/\(id)/status")).json
        let gzipSha = try #require(status["gzipSha256"] as? String)
        let gzipSize = try #require(status["gzipSizeBytes"] as? Int)
        #expect(gzipSize < bytes.count)
        #expect(server.files(in: "objects").contains("\(gzipSha).csv.gz"))

        let raw = try await curl(url, ["-H", "Accept-Encoding: gzip"])
        #expect(raw.headers["etag"] == "\"\(gzipSha)\"")
        #expect(raw.headers["etag"] != "\"\(status["sha256"] as? String ?? "")\"")
        #expect(raw.headers["content-length"] == String(gzipSize))
        #expect(raw.headers["accept-ranges"] == "bytes")
        #expect(raw.body.prefix(2) == Data([0x1f, 0x8b]))
        let path = NSTemporaryDirectory() + "resume-\(UUID().uuidString).csv.gz"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for offset in [1, 1000, gzipSize / 2] {
            try raw.body.prefix(offset).write(to: URL(fileURLWithPath: path))
            let resumed = try await run("curl", ["-s", "-S", "-f", "-C", "-", "-H", "Accept-Encoding: gzip", "-o", path, url])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == raw.body, "resumed at \(offset)")
        }
        #expect(try await run("gzip", ["-dc", path]).stdout == bytes)

        let refused = try await curl(url, ["-H", "Accept-Encoding: gzip;q=0, identity"])
        #expect(refused.headers["content-encoding"] == nil)
        #expect(refused.body == bytes)
        // Still one gzip file however many asked.
        #expect(server.files(in: "objects").filter { $0.hasSuffix(".gz") }.count >= 1)
        #expect(try await curl(server.url("/exports/\(id)/status")).json["gzipSha256"] as? String == gzipSha)
    }

    /// A gzip form made while its export still runs (the compressor follows
    /// a growing file) is the same bytes as one made from the finished file,
    /// so one made again after a restart resumes the first one's ranges.
    @Test func theGzipFormIsTheSameBytesMadeLiveOrFromTheFinishedFile() async throws {
        let server = try await TestServer.start(rows: 20_000)
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        let live = try #require(try await curl(server.url("/exports/csv?columns=id,notes,full_name"), method: "POST").json["exportId"] as? String)
        let follower = try startCurl(server.url("/exports/\(live)/download"), ["--compressed"])
        try await eventually("the gzip follower waits") { follower.hasHeaders }
        try await lock.release()
        #expect(await follower.wait().exitCode == 0)
        try await eventually("live form published") { try await curl(server.url("/exports/\(live)/status")).json["gzipSha256"] is String }
        let made = try await curl(server.url("/exports/\(live)/status")).json["gzipSha256"] as? String

        let again = try #require(try await curl(server.url("/exports/csv?columns=id,notes,full_name"), method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
        try await eventually("again completes") { try await curl(server.url("/exports/\(again)/status")).json["status"] as? String == "completed" }
        #expect(try await curl(server.url("/exports/\(again)/download"), ["--compressed"]).exitCode == 0)
        try await eventually("second form published") { try await curl(server.url("/exports/\(again)/status")).json["gzipSha256"] is String }
        #expect(try await curl(server.url("/exports/\(again)/status")).json["gzipSha256"] as? String == made)
    }

    @Test func liveGzipDownloadOfANewExportDecompressesToTheCSV() async throws {
        let server = try await Shared.server.get()
        let live = try await curl(server.url("/exports/csv?country_code=JP"), ["--compressed"])
        #expect(live.exitCode == 0)
        #expect(live.headers["content-encoding"] == "gzip")
        #expect(
            live.body
                == (try await server.psqlCopy(
                    "SELECT id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes FROM users WHERE country_code = 'JP' ORDER BY id")))
    }
}
