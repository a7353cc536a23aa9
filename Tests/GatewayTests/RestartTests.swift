import Cache
import Foundation
import Testing

@testable import Gateway

#if canImport(Glibc)
import Glibc
#endif

/// The gateway binary, killed with SIGKILL in the middle of an export and
/// started again: nothing half-written is published, and every export id
/// given out before the crash gets its file after it.
struct RestartTests {
    /// The `gateway` executable that `swift build --build-tests` built next to the tests.
    static var binary: String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/gateway").path
    }

    /// A database seeded by an in-process gateway (stopped again, so the
    /// binary has it to itself), and an empty cache folder for the binary.
    static func seededDatabase(rows: Int) async throws -> (TestServer, String) {
        let seeded = try await TestServer.start(rows: rows)
        await seeded.stop()
        return (seeded, try temporaryDirectory("restart-cache"))
    }

    /// The INSTANCE_ID of the binary on this cache folder: started again on
    /// it, it is the same gateway (it takes back its runs and its partial files).
    static func instanceID(_ cacheDirectory: String) -> String {
        let folder = cacheDirectory.split(separator: "/").last.map(String.init) ?? "cache"
        return "proc-" + String(folder.utf8.filter(Configuration.Cluster.isIDByte).map { Character(UnicodeScalar($0)) }.prefix(48))
    }

    /// The binary's own partial folder in that cache folder.
    static func partialFolder(_ cacheDirectory: String) -> String {
        cacheDirectory + "/" + ContentStore(root: cacheDirectory, instance: Self.instanceID(cacheDirectory)).partialFolder
    }

    /// Starts the binary on a free port and waits until it serves.
    static func launch(databaseURL: String, cacheDirectory: String, environment: [String: String] = [:]) async throws -> (RunningProcess, String) {
        let process = try RunningProcess(
            Self.binary, [],
            environment: [
                "DATABASE_URL": databaseURL, "HOST": "127.0.0.1", "PORT": "0", "CACHE_DIR": cacheDirectory,
                "INSTANCE_ID": Self.instanceID(cacheDirectory),
                "SEED": "false", "MAX_CONCURRENT_EXPORTS": "1", "LOG_LEVEL": "info",
            ].merging(environment) { _, new in new })
        let port = try await process.listeningPort("the gateway listens", timeout: .seconds(20))
        return (process, "http://127.0.0.1:\(port)")
    }

    @Test(.timeLimit(.minutes(3)))
    func killDashNineMidExportThenRestartFinishesEveryExportUnderItsId() async throws {
        // A database seeded by an in-process gateway, then used by the binary.
        let (seeded, cache) = try await Self.seededDatabase(rows: 400_000)
        defer { try? FileManager.default.removeItem(atPath: cache) }

        // One COPY, written straight into the file: frozen, it holds the whole export.
        var (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache, environment: ["EXPORT_PARALLELISM": "1"])
        // One finished before the crash.
        let small = try #require(try await curl(base + "/exports/csv?country_code=JP&columns=id,email", method: "POST").json["exportId"] as? String)
        try await eventually("small export completes") { try await curl(base + "/exports/\(small)/status").json["status"] as? String == "completed" }
        let before = try await curl(base + "/exports/\(small)/download")
        let etag = try #require(before.headers["etag"])

        // One cut off mid-COPY, one waiting behind it. Its COPY frozen
        // (SIGSTOP of its backend), so the crash lands mid-export however
        // fast this machine reads; tried again if it had already finished.
        var caught: (id: String, pids: [Int32])?
        var objectsBefore = 0
        for _ in 0..<3 where caught == nil {
            objectsBefore = try FileManager.default.contentsOfDirectory(atPath: cache + "/objects").count
            let id = try #require(try await curl(base + "/exports/csv", method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
            try await eventually("bytes written") { (try await curl(base + "/exports/\(id)/status").json["bytesWritten"] as? Int ?? 0) > 0 }
            let pids = try await seeded.activeCopyPIDs()
            freezeBackends(pids)
            if !pids.isEmpty, try await exportStallsShort(statusURL: base + "/exports/\(id)/status", of: 400_000) {
                caught = (id, pids)
            } else {
                pids.forEach { kill($0, SIGCONT) }
                try await eventually("the uncaught export completes") { try await curl(base + "/exports/\(id)/status").json["status"] as? String == "completed" }
            }
        }
        let (big, pids) = try #require(caught, "the COPY was caught running")
        let queued = try #require(try await curl(base + "/exports/csv?subscription_tier=enterprise", method: "POST").json["exportId"] as? String)
        #expect(try await curl(base + "/exports/\(big)/status").json["status"] as? String == "running")
        #expect(try await curl(base + "/exports/\(queued)/status").json["status"] as? String == "queued")
        let partialsAtCrash = Set((try? FileManager.default.contentsOfDirectory(atPath: RestartTests.partialFolder(cache))) ?? [])
        gateway.kill9()
        _ = await gateway.wait()
        pids.forEach { kill($0, SIGCONT) }
        #expect(!partialsAtCrash.isEmpty, "the crash left a partial file")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache + "/objects").count == objectsBefore, "only the finished exports were published")

        (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        defer { gateway.terminate() }
        let partialsAfter = Set((try? FileManager.default.contentsOfDirectory(atPath: RestartTests.partialFolder(cache))) ?? [])
        #expect(partialsAfter.isDisjoint(with: partialsAtCrash), "the crash's partial file was removed at start")

        // The finished one: same ETag, and a range with If-Range still resumes.
        let after = try await curl(base + "/exports/\(small)/download", ["-H", "Range: bytes=10-", "-H", "If-Range: \(etag)"])
        #expect(after.status == 206)
        #expect(after.headers["etag"] == etag)
        #expect(after.body == before.body.dropFirst(10))

        // The cut-off and the queued ones run again under their ids.
        for id in [big, queued] {
            try await eventually(timeout: .seconds(120), "\(id) completes after the restart") {
                try await curl(base + "/exports/\(id)/status").json["status"] as? String == "completed"
            }
        }
        let all = "id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes"
        #expect(try await curl(base + "/exports/\(big)/download").body == (try await seeded.psqlCopy("SELECT \(all) FROM users ORDER BY id")))
        #expect(try await curl(base + "/exports/\(queued)/download").body == (try await seeded.psqlCopy("SELECT \(all) FROM users WHERE subscription_tier = 'enterprise' ORDER BY id")))
    }

    @Test(.timeLimit(.minutes(2)))
    func cancelledAndDeletedExportsStayThatWayAfterARestart() async throws {
        let (seeded, cache) = try await Self.seededDatabase(rows: 3000)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        let lock = try await TableLock.lockUsers(seeded)
        let cancelled = try #require(try await curl(base + "/exports/csv?columns=id", method: "POST").json["exportId"] as? String)
        #expect(try await curl(base + "/exports/\(cancelled)", method: "DELETE").json["status"] as? String == "cancelled")
        try await lock.release()
        let deleted = try #require(try await curl(base + "/exports/csv?columns=email", method: "POST").json["exportId"] as? String)
        try await eventually("completion") { try await curl(base + "/exports/\(deleted)/status").json["status"] as? String == "completed" }
        #expect(try await curl(base + "/exports/\(deleted)", method: "DELETE").status == 204)
        gateway.kill9()
        _ = await gateway.wait()

        (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        defer { gateway.terminate() }
        #expect(try await curl(base + "/exports/\(cancelled)/status").json["status"] as? String == "cancelled")
        #expect(try await curl(base + "/exports/\(deleted)/status").status == 404)
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache + "/objects").isEmpty, "no file without an export")
    }

    @Test(.timeLimit(.minutes(2)))
    func sigtermDoesNotWaitForRunningExportsAndTheyRunAgainAfterwards() async throws {
        let (seeded, cache) = try await Self.seededDatabase(rows: 3000)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        // The export cannot finish while the lock is held: only a shutdown
        // that stops it can end this process.
        let lock = try await TableLock.lockUsers(seeded)
        let id = try #require(try await curl(base + "/exports/csv?columns=id,notes", method: "POST").json["exportId"] as? String)
        let reader = try startCurl(base + "/exports/\(id)/download")
        try await eventually("response head") { reader.hasHeaders }
        gateway.terminate()
        let stopped = await gateway.wait()
        // The log's end says why, if not (a crash prints its backtrace there).
        #expect(stopped.status == 0, "a clean exit on SIGTERM: \(stopped.stderr.suffix(6000))")
        #expect(await reader.wait().exitCode != 0, "the live download ends as an aborted transfer")
        try await lock.release()

        (gateway, base) = try await Self.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        defer { gateway.terminate() }
        try await eventually("the export runs again and completes") { try await curl(base + "/exports/\(id)/status").json["status"] as? String == "completed" }
        #expect(try await curl(base + "/exports/\(id)/download").body == (try await seeded.psqlCopy("SELECT id, notes FROM users ORDER BY id")))
    }
}
