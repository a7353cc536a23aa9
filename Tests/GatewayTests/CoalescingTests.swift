import Foundation
import NIOPosix
import Testing

@testable import Gateway

/// Identical requests share one query and one file; each export keeps its own id.
struct CoalescingTests {
    static let waitingQueries = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"

    /// A run whose only rows left in the journal are cancelled exports (the
    /// export that kept it going completed and was deleted) is restored as
    /// an ended run; an export that joins it after the restart (the run
    /// completed within CACHE_TTL, its file kept) reads completed, with the
    /// file, not cancelled (seen once in a chaos run).
    @Test(.timeLimit(.minutes(2)))
    func anExportJoiningACompletedRunRestoredFromCancelledRowsIsCompleted() async throws {
        let first = try await TestServer.start()
        let lock = try await TableLock.lockUsers(first)
        let x = try #require(try await curl(first.url("/exports/csv?columns=id,email"), method: "POST").json["exportId"] as? String)
        let y = try #require(try await curl(first.url("/exports/csv?columns=id,email"), method: "POST").json["exportId"] as? String)
        #expect(try await curl(first.url("/exports/\(x)"), method: "DELETE").status == 200, "x cancelled; y keeps the run going")
        try await lock.release()
        try await eventually("y completes") { try await curl(first.url("/exports/\(y)/status")).json["status"] as? String == "completed" }
        let sha = try #require(try await curl(first.url("/exports/\(y)/status")).json["sha256"] as? String)
        #expect(try await curl(first.url("/exports/\(y)"), method: "DELETE").status == 204)
        await first.stop(keepingCache: true)
        // The restart restores the run from x's row alone (an ended run) and
        // removes the file no export refers to. In the chaos run, exports on
        // other gateways joined the completed run meanwhile and kept the
        // file; here it is put back, as they would have kept it.
        let object = first.cacheDirectory + "/objects/\(sha).csv"
        let saved = NSTemporaryDirectory() + "kept-\(sha).csv"
        try FileManager.default.copyItem(atPath: object, toPath: saved)
        defer { try? FileManager.default.removeItem(atPath: saved) }
        let second = try await TestServer.start(databaseURL: first.databaseURL, seed: false, cacheDirectory: first.cacheDirectory)
        defer { Task { await second.stop() } }
        #expect(try await curl(second.url("/exports/\(x)/status")).json["status"] as? String == "cancelled")
        try await eventually("the restore removed the unreferenced file") { !FileManager.default.fileExists(atPath: object) }
        try FileManager.default.copyItem(atPath: saved, toPath: object)
        let z = try #require(try await curl(second.url("/exports/csv?columns=id,email"), method: "POST").json["exportId"] as? String)
        let status = try await curl(second.url("/exports/\(z)/status")).json
        #expect(status["status"] as? String == "completed", "\(status)")
        let expected = try await second.psqlCopy("SELECT id, email FROM users ORDER BY id")
        #expect(try await curl(second.url("/exports/\(z)/download")).body == expected)
    }

    /// The janitor removes ended runs no export refers to once CACHE_TTL has
    /// passed; an admission joining such a run (still fresh when it began)
    /// locks it only FOR SHARE. The janitor's DELETE, made while the
    /// admission waited (here on the file's lock, which the test holds),
    /// used to go ahead once the admission committed, and the new,
    /// acknowledged export's run was gone: 404 on every other gateway (an
    /// acknowledged export vanished in a chaos run). It now waits for the
    /// admission and keeps the run.
    @Test(.timeLimit(.minutes(2)))
    func aRunJoinedWhileTheJanitorForgetsItKeepsItsRow() async throws {
        // CACHE_TTL 8 s: the join must begin within it of x's completion (a
        // loaded CI machine took seconds for the steps before), and the janitor
        // looks every 2 s.
        let server = try await TestServer.start(cacheTTLSeconds: 8) { $0.database.journalStatementTimeoutSeconds = 30 }
        defer { Task { await server.stop() } }
        let x = try #require(try await curl(server.url("/exports/csv?columns=id"), method: "POST").json["exportId"] as? String)
        try await eventually("x completes") { try await curl(server.url("/exports/\(x)/status")).json["status"] as? String == "completed" }
        let sha = try #require(try await curl(server.url("/exports/\(x)/status")).json["sha256"] as? String)
        let run = try #require(try await server.sql("SELECT run_id FROM gateway.exports WHERE id = '\(x)'")[0][0])
        // Deleted: the run stays only as the fresh answer to its request.
        #expect(try await curl(server.url("/exports/\(x)"), method: "DELETE").status == 204)
        let url = server.databaseURL
        let holder = try await NIOThreadPool.singleton.runIfActive { () -> TableLockBox in
            let db = try PostgresConnection(url: url)
            _ = try db.execute("SELECT pg_advisory_lock(hashtextextended('\(sha)', 0))")
            return TableLockBox(db: db)
        }
        let joining = try startCurl(server.url("/exports/csv?columns=id"), method: "POST")
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type IN ('Lock', 'Advisory') AND "
        try await eventually("the admission joined the run and waits for the file's lock") {
            try await server.sql(waiting + "query ILIKE '%advisory_xact_lock_shared%'")[0][0] == "1"
        }
        // Past CACHE_TTL: the janitor tries to forget the run meanwhile.
        try await eventually(timeout: .seconds(20), "the janitor's removal of ended runs waits") {
            try await server.sql(waiting + "(query ILIKE 'DELETE FROM gateway.runs%' OR query ILIKE '%pg_advisory_xact_lock(\(ExportJournal.admissionLock))%')")[0][0] == "1"
        }
        try await NIOThreadPool.singleton.runIfActive {
            _ = try holder.db.execute("SELECT pg_advisory_unlock_all()")
            holder.db.close()
        }
        let joined = await joining.wait()
        #expect(joined.status == 202)
        let z = try #require(joined.json["exportId"] as? String)
        // Two more janitor rounds: the run is still there, with z on it.
        try await Task.sleep(for: .seconds(5))
        #expect(try await server.sql("SELECT count(*) FROM gateway.runs WHERE id = '\(run)'")[0][0] == "1", "the run z joined was deleted under it")
        #expect(try await server.sql("SELECT run_id FROM gateway.exports WHERE id = '\(z)'")[0][0] == run)
        #expect(try await curl(server.url("/exports/\(z)/status")).json["status"] as? String == "completed")
    }

    @Test func tenIdenticalExportsRunOneQueryAndShareOneFile() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        // The same request, spelled ten ways: order, case, repetition, sign and zeros.
        let spellings = [
            "country_code=US,DE&min_ltv=100", "country_code=de,us&min_ltv=100.00", "min_ltv=%2B100&country_code=US&country_code=DE",
            "country_code=DE,US,US&min_ltv=0100", "country_code=us&country_code=de&min_ltv=100.0", "country_code=US,DE&min_ltv=100",
            "min_ltv=100&country_code=Us,dE", "country_code=DE,US&min_ltv=100", "country_code=US,DE&min_ltv=100.000", "country_code=de,US&min_ltv=100",
        ]
        let ids = try await withThrowingTaskGroup(of: String?.self) { group in
            for query in spellings {
                group.addTask { try await curl(server.url("/exports/csv?\(query)"), method: "POST").json["exportId"] as? String }
            }
            return try await group.reduce(into: [String]()) { if let id = $1 { $0.append(id) } }
        }
        #expect(Set(ids).count == 10, "each POST gets its own export id")
        try await eventually("the query waits on the lock") { try await server.sql(Self.waitingQueries)[0][0] == "1" }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await server.sql(Self.waitingQueries)[0][0] == "1", "one query for ten exports")
        try await lock.release()

        let expected = try await server.psqlCopy(
            "SELECT id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes FROM users WHERE country_code IN ('US','DE') AND lifetime_value >= 100 ORDER BY id"
        )
        var hashes = Set<String>()
        for id in ids {
            try await eventually("completion") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "completed" }
            hashes.insert(try await curl(server.url("/exports/\(id)/status")).json["sha256"] as? String ?? "")
            #expect(try await curl(server.url("/exports/\(id)/download")).body == expected)
        }
        #expect(hashes.count == 1)
        #expect(server.files(in: "objects").count == 1)
    }

    @Test func cancellingOneSharedExportLeavesTheOtherAndItsQuery() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        let a = try #require(try await curl(server.url("/exports/csv?subscription_tier=pro"), method: "POST").json["exportId"] as? String)
        let b = try #require(try await curl(server.url("/exports/csv?subscription_tier=PRO"), method: "POST").json["exportId"] as? String)
        let readerA = try startCurl(server.url("/exports/\(a)/download"))
        let readerB = try startCurl(server.url("/exports/\(b)/download"))
        try await eventually("both heads") { readerA.hasHeaders && readerB.hasHeaders }
        try await eventually("the query waits") { try await server.sql(Self.waitingQueries)[0][0] == "1" }

        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").json["status"] as? String == "cancelled")
        let resultA = await readerA.wait()
        #expect(resultA.exitCode != 0, "the cancelled export's reader is aborted")
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await server.sql(Self.waitingQueries)[0][0] == "1", "the query still runs for the other export")
        #expect(try await curl(server.url("/exports/\(b)/status")).json["status"] as? String == "running")

        try await lock.release()
        let resultB = await readerB.wait()
        #expect(resultB.exitCode == 0)
        #expect(
            resultB.body
                == (try await server.psqlCopy(
                    "SELECT id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes FROM users WHERE subscription_tier = 'pro' ORDER BY id")))
        #expect(try await curl(server.url("/exports/\(a)/status")).json["status"] as? String == "cancelled")
        #expect(try await curl(server.url("/exports/\(a)/download")).status == 410)
    }

    @Test func completedResultIsReusedUntilNoCacheAsksForANewRun() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let first = try #require(try await curl(server.url("/exports/csv?columns=id,email"), method: "POST").json["exportId"] as? String)
        try await eventually("completion") { try await curl(server.url("/exports/\(first)/status")).json["status"] as? String == "completed" }
        let original = try await curl(server.url("/exports/\(first)/status")).json

        let reused = try await curl(server.url("/exports/csv?columns=id,email"), method: "POST").json
        #expect(reused["exportId"] as? String != first)
        #expect(reused["status"] as? String == "completed", "answered from the finished file")
        #expect(reused["completedAt"] as? String == original["completedAt"] as? String)
        #expect(reused["sha256"] as? String == original["sha256"] as? String)

        let forced = try await curl(server.url("/exports/csv?columns=id,email"), method: "POST", ["-H", "Cache-Control: no-cache"]).json
        let id = try #require(forced["exportId"] as? String)
        try await eventually("completion") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "completed" }
        let rerun = try await curl(server.url("/exports/\(id)/status")).json
        let startedAt = try #require(rerun["startedAt"] as? String)
        let before = try #require(original["completedAt"] as? String)
        #expect(startedAt > before, "a new run started after the first had finished")
        #expect(rerun["sha256"] as? String == original["sha256"] as? String, "same request, same bytes")
    }
}
