import Foundation
import NIOPosix
import Testing

@testable import Gateway

/// A database of 400,000 rows (about 52 MB of CSV, so a download or an fsync
/// takes long enough to act in the middle of it), seeded once and copied for
/// each test that needs one of its own (`CREATE DATABASE … TEMPLATE`).
enum BigDatabase {
    static let template = Lazy { () -> String in
        let seeded = try await TestServer.start(rows: 400_000)
        await seeded.stop()
        return seeded.databaseName
    }

    /// A fresh copy: its own users table and its own journal.
    static func fresh() async throws -> String {
        let template = try await Self.template.get()
        let name = "gw_big_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(12))"
        let admin = TestServer.adminURL
        try await NIOThreadPool.singleton.runIfActive {
            let db = try PostgresConnection(url: admin)
            defer { db.close() }
            try db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(template)' AND pid <> pg_backend_pid()")
            try db.execute("CREATE DATABASE \(name) TEMPLATE \(template)")
        }
        let slash = try #require(admin.range(of: "/", options: .backwards))
        return admin[..<slash.upperBound] + name
    }
}

/// The gateway binary under signals: `kill -9` in the middle of publishing a
/// file, SIGTERM with downloads in flight (finished ones finish, live ones
/// are cut, exit 0), a grace that runs out, and a second signal.
@Suite(.serialized)
struct ProcessFaultTests {
    static func waitForStatus(_ base: String, _ id: String, _ status: String, timeout: Duration = .seconds(60)) async throws {
        try await eventually(timeout: timeout, "\(id) \(status)") { try await curl(base + "/exports/\(id)/status").json["status"] as? String == status }
    }

    /// A finished export of the whole table, with its size and hash.
    static func finishedExport(_ base: String) async throws -> (id: String, size: Int, sha: String) {
        let id = try #require(try await curl(base + "/exports/csv", method: "POST").json["exportId"] as? String)
        try await Self.waitForStatus(base, id, "completed")
        let status = try await curl(base + "/exports/\(id)/status").json
        return (id, try #require(status["sizeBytes"] as? Int), try #require(status["sha256"] as? String))
    }

    @Test(.timeLimit(.minutes(3)))
    func killDashNineWhilePublishingLeavesNoHalfFileAndTheExportCompletesAfterRestart() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("publish-kill")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["CACHE_TTL": "0"])
        let first = try await Self.finishedExport(base)

        // The same request again as a new run: every byte of it is written
        // when its partial file reaches the first one's size; then come the
        // fsync (tens of MB: a few hundred ms here), the rename and the journal.
        var caught = false
        var second = ""
        var partialsAtKill: Set<String> = []
        for _ in 0..<3 where !caught {
            second = try #require(try await curl(base + "/exports/csv", method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
            let deadline = ContinuousClock.now + .seconds(60)
            var polls = 0
            while ContinuousClock.now < deadline {
                let sizes =
                    (try? FileManager.default.contentsOfDirectory(atPath: RestartTests.partialFolder(cache)))?.compactMap {
                        (try? FileManager.default.attributesOfItem(atPath: RestartTests.partialFolder(cache) + "/" + $0))?[.size] as? Int
                    } ?? []
                if sizes.contains(first.size) {
                    gateway.kill9()
                    partialsAtKill = Set((try? FileManager.default.contentsOfDirectory(atPath: RestartTests.partialFolder(cache))) ?? [])
                    caught = true
                    break
                }
                // The status only now and then: a curl takes longer than the window looked for.
                polls += 1
                if polls % 100 == 0, try await curl(base + "/exports/\(second)/status").json["status"] as? String == "completed" { break }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        if !caught { gateway.kill9() }
        _ = await gateway.wait()
        try #require(caught, "never saw the file whole before its rename")

        // Whatever is in objects/ is whole: its name is its hash.
        for name in try FileManager.default.contentsOfDirectory(atPath: cache + "/objects") {
            #expect(try await sha256Hex(ofFile: cache + "/objects/" + name) + ".csv" == name, "\(name) is complete")
        }
        (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["CACHE_TTL": "0"])
        defer { gateway.terminate() }
        let partialsAfter = Set((try? FileManager.default.contentsOfDirectory(atPath: RestartTests.partialFolder(cache))) ?? [])
        #expect(partialsAfter.isDisjoint(with: partialsAtKill), "the half-published file is gone")
        try await Self.waitForStatus(base, second, "completed")
        #expect(try await curl(base + "/exports/\(second)/status").json["sha256"] as? String == first.sha, "the same bytes under its own id")
        let resumed = try await curl(base + "/exports/\(first.id)/download", ["-r", "100-199", "-H", "If-Range: \"\(first.sha)\""])
        #expect(resumed.status == 206 && resumed.body.count == 100)
    }

    /// Signals nothing here uses do not stop the process (their default
    /// action would); SIGTERM still shuts it down.
    @Test(.timeLimit(.minutes(2)))
    func straySignalsAreIgnored() async throws {
        let (seeded, cache) = try await RestartTests.seededDatabase(rows: 3000)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let (gateway, base) = try await RestartTests.launch(databaseURL: seeded.databaseURL, cacheDirectory: cache)
        for signal in [SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGPIPE, SIGXFSZ] {
            kill(gateway.pid, signal)
            try await Task.sleep(for: .milliseconds(100))
            #expect(gateway.isRunning, "signal \(signal)")
        }
        #expect(try await curl(base + "/health").status == 200)
        gateway.terminate()
        #expect(await gateway.wait().status == 0)
    }

    @Test(.timeLimit(.minutes(3)))
    func sigtermLetsFinishedDownloadsEndCutsLiveOnesAndExitsZero() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("sigterm")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["SHUTDOWN_GRACE": "20"])
        let done = try await Self.finishedExport(base)

        // A live download of an export that cannot progress (its table is locked).
        let lock = try await TableLock.lockUsers(databaseURL: url)
        let live = try #require(try await curl(base + "/exports/csv?columns=id,notes", method: "POST").json["exportId"] as? String)
        let liveReader = try startCurl(base + "/exports/\(live)/download")
        // A download of the finished file, slow enough to be in flight at the signal (about 2.5 s).
        let finished = try startCurl(base + "/exports/\(done.id)/download", ["--limit-rate", "20M"])
        try await eventually("both downloads under way") { liveReader.hasHeaders && finished.bytesReceived > 0 }

        let signalled = ContinuousClock.now
        gateway.terminate()
        let cut = await liveReader.wait()
        #expect(cut.exitCode != 0, "the live download is aborted, not ended like a complete one")
        #expect(ContinuousClock.now - signalled < .seconds(2), "and at once")
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await curl(base + "/health").exitCode == 7, "no new connections once shutting down")
        let ended = await finished.wait()
        #expect(ended.exitCode == 0, "the download of the finished file completes")
        let path = NSTemporaryDirectory() + "sigterm-\(UUID().uuidString).csv"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try ended.body.write(to: URL(fileURLWithPath: path))
        #expect(try await sha256Hex(ofFile: path) == done.sha, "every byte of it")
        let exit = await gateway.wait()
        #expect(exit.status == 0, "a clean exit")
        #expect(ContinuousClock.now - signalled < .seconds(20))
        try await lock.release()

        // The interrupted export was not failed: it runs again on the next start.
        (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache)
        defer { gateway.terminate() }
        try await Self.waitForStatus(base, live, "completed")
    }

    @Test(.timeLimit(.minutes(2)))
    func aDownloadLongerThanTheGraceIsCutAndASecondSignalExitsAtOnce() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("grace")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        var (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["SHUTDOWN_GRACE": "2"])
        let done = try await Self.finishedExport(base)
        // 52 MB at 2 MB/s: far longer than the grace.
        var slow = try startCurl(base + "/exports/\(done.id)/download", ["--limit-rate", "2M"])
        try await eventually("under way") { slow.bytesReceived > 0 }
        var signalled = ContinuousClock.now
        gateway.terminate()
        let exit = await gateway.wait()
        let took = ContinuousClock.now - signalled
        #expect(exit.status == 0)
        #expect(took >= .seconds(2) && took < .seconds(6), "cut at the grace, not before or much after: \(took)")
        #expect(await slow.wait().exitCode != 0, "the cut download does not look complete")

        (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["SHUTDOWN_GRACE": "30"])
        slow = try startCurl(base + "/exports/\(done.id)/download", ["--limit-rate", "2M"])
        try await eventually("under way") { slow.bytesReceived > 0 }
        signalled = ContinuousClock.now
        gateway.terminate()
        try await Task.sleep(for: .milliseconds(300))
        gateway.interrupt()
        let second = await gateway.wait()
        #expect(second.status == 128 + SIGINT, "the second signal exits at once, as interrupted")
        #expect(ContinuousClock.now - signalled < .seconds(2))
        _ = await slow.wait()
    }
}
