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
        for ignored in ["bytes=abc", "items=0-5", "bytes=5-1", "bytes=0-1,5-6"] {
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

    @Test func gzipIsHonouredForCompletedAndLiveDownloads() async throws {
        let (server, id, bytes) = try await Self.completed()
        let compressed = try await curl(server.url("/exports/\(id)/download"), ["--compressed"])
        #expect(compressed.exitCode == 0)
        #expect(compressed.headers["content-encoding"] == "gzip")
        #expect(compressed.headers["vary"] == "Accept-Encoding")
        #expect(compressed.headers["accept-ranges"] == nil, "on-the-fly gzip cannot honour ranges")
        #expect(compressed.body == bytes)
        let raw = try await curl(server.url("/exports/\(id)/download"), ["-H", "Accept-Encoding: gzip"])
        #expect(raw.body.count < bytes.count)
        #expect(raw.body.prefix(2) == Data([0x1f, 0x8b]))

        let live = try await curl(server.url("/exports/csv"), ["--compressed"])
        #expect(live.headers["content-encoding"] == "gzip")
        #expect(live.body == bytes)
        let refused = try await curl(server.url("/exports/\(id)/download"), ["-H", "Accept-Encoding: gzip;q=0, identity"])
        #expect(refused.headers["content-encoding"] == nil)
        #expect(refused.body == bytes)
    }
}
