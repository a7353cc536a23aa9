import Foundation
import Testing

/// Exports expire, unreferenced files go, the cache stays within its bound,
/// and a full disk fails one export cleanly while the server stays up.
struct RetentionTests {
    static func waitForStatus(_ server: TestServer, _ id: String, _ status: String) async throws {
        try await eventually(status) { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == status }
    }

    @Test func exportsExpireAfterExportTTLWith410AndTheirFilesGo() async throws {
        // An expired id answers 410 for another EXPORT_TTL, then 404, and its
        // journal row goes then too: the checks below must fall in that
        // window, on a busy machine too (4 s and 8 s were each too short
        // once in a full CI run on 2 cores).
        let server = try await TestServer.start(cacheTTLSeconds: 1, exportTTLSeconds: 20)
        defer { Task { await server.stop() } }
        let created = ContinuousClock.now
        let id = try #require(try await curl(server.url("/exports/csv?columns=id"), method: "POST").json["exportId"] as? String)
        try await Self.waitForStatus(server, id, "completed")
        #expect(server.files(in: "objects").count == 1)
        try await Task.sleep(until: created + .milliseconds(20300))
        for (path, method) in [("/exports/\(id)/status", "GET"), ("/exports/\(id)/download", "GET"), ("/exports/\(id)", "DELETE")] {
            let result = try await curl(server.url(path), method: method)
            #expect(result.status == 410, "\(method) \(path)")
            #expect(result.json["error"] as? String == "export_expired")
        }
        // Journaled, so the id answers 410 after a restart too (the row goes
        // another EXPORT_TTL later: checked at once, not after the file).
        try await eventually("the expiry is journaled") {
            try await server.sql("SELECT count(*) FROM gateway.exports WHERE expired_at IS NOT NULL")[0][0] == "1"
        }
        try await eventually("the expired export's file is removed") { server.files(in: "objects").isEmpty }
    }

    @Test func deletingAnExportMakesItsFilesRoomForTheNext() async throws {
        // 3,000 rows make about 380 KB of CSV; room for one file and a bit.
        let server = try await TestServer.start(cacheMaxBytes: 700 * 1024)
        defer { Task { await server.stop() } }
        let a = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await Self.waitForStatus(server, a, "completed")
        let sizeA = try #require(try await curl(server.url("/exports/\(a)/status")).json["sizeBytes"] as? Int)
        #expect(sizeA > 300_000 && sizeA < 450_000)
        // a deleted: its file is no longer needed by any export, so it makes
        // room without evicting anyone (a full cache with a's export still
        // there is TenantTests' case).
        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").status == 204)
        let c = try await curl(server.url("/exports/csv?quoteChar=%27"), method: "POST")
        #expect(c.status == 202)
        let id = try #require(c.json["exportId"] as? String)
        try await Self.waitForStatus(server, id, "completed")
        let sha = try #require(try await curl(server.url("/exports/\(id)/status")).json["sha256"] as? String)
        #expect(server.files(in: "objects") == ["\(sha).csv"], "a's CSV was removed")
        #expect(server.files(in: "partial").isEmpty)
    }

    static let canMountTmpfs: Bool = {
        guard getuid() == 0 else { return false }
        let dir = NSTemporaryDirectory() + "tmpfs-probe-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/sh")
        mount.arguments = ["-c", "mount -t tmpfs -o size=64k tmpfs '\(dir)' && umount '\(dir)'"]
        try? mount.run()
        mount.waitUntilExit()
        return mount.terminationStatus == 0
    }()

    @Test(.enabled(if: canMountTmpfs, "needs root and tmpfs mounts"))
    func diskFullFailsThatExportCleanlyAndTheServerStaysUp() async throws {
        let cache = try temporaryDirectory("tmpfs-cache")
        let mounted = try await run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", cache])
        try #require(mounted.status == 0, "\(mounted.stderr)")
        defer { _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", cache]) }
        let server = try await TestServer.start(rows: 20_000, cacheDirectory: cache)
        defer { Task { await server.stop() } }

        // About 2.5 MB of CSV into a 1 MB file system: ENOSPC mid-export,
        // with a reader following it from before the first byte.
        let lock = try await TableLock.lockUsers(server)
        let big = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        let reader = try startCurl(server.url("/exports/\(big)/download"))
        try await eventually("response head") { reader.hasHeaders }
        try await lock.release()
        try await Self.waitForStatus(server, big, "failed")
        #expect(try await curl(server.url("/exports/\(big)/status")).json["error"] as? String == "the export cache is out of disk space")
        let live = await reader.wait()
        #expect(live.status == 200)
        #expect(live.exitCode != 0, "the live reader sees an aborted transfer")
        try await eventually("partial file removed") { server.files(in: "partial").isEmpty }

        // The server is still there, and a small export fits.
        #expect(try await curl(server.url("/health")).status == 200)
        let small = try await curl(server.url("/exports/csv?columns=id"))
        #expect(small.exitCode == 0)
        #expect(small.body == (try await server.psqlCopy("SELECT id FROM users ORDER BY id")))
    }
}
