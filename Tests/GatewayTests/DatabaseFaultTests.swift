import Foundation
import Testing

@testable import Gateway

/// PostgreSQL restarted, stopped or its connections cut, on a cluster of
/// the test's own: every acknowledgement (202, a cancel's 200, a delete's
/// 204) is in the journal, or the answer was a 503 and nothing changed;
/// health follows the database; a running export fails cleanly and its live
/// download is aborted; the next export succeeds once the database is back.
@Suite(.serialized)
struct DatabaseFaultTests {
    static func rows(_ server: TestServer) async throws -> Int {
        Int(try await server.sql("SELECT count(*) FROM gateway.exports")[0][0] ?? "") ?? -1
    }

    static func status(_ server: TestServer, _ id: String) async throws -> String? {
        try await curl(server.url("/exports/\(id)/status")).json["status"] as? String
    }

    @Test(.timeLimit(.minutes(2)))
    func acknowledgementsAreInTheJournalOrTheAnswerWas503() async throws {
        let pg = try await PrivatePostgres.start()
        defer { Task { await pg.destroy() } }
        let server = try await TestServer.start(rows: 3000, maxConcurrent: 1, databaseURL: pg.url)
        defer { Task { await server.stop() } }
        let a = try #require(try await curl(server.url("/exports/csv?columns=id"), method: "POST").json["exportId"] as? String)
        try await eventually("a completes") { try await Self.status(server, a) == "completed" }

        // 1. A create right after a restart: the journal's pooled connection
        // is dead; the write is retried on a fresh one.
        try await pg.restart()
        let rowsBefore = try await Self.rows(server)
        let b = try await curl(server.url("/exports/csv?columns=email"), method: "POST")
        if b.status == 202 {
            let id = try #require(b.json["exportId"] as? String)
            #expect(try await server.sql("SELECT count(*) FROM gateway.exports WHERE id = '\(id)'")[0][0] == "1", "the 202 is in the journal")
            try await eventually("b completes") { try await Self.status(server, id) == "completed" }
        } else {
            #expect(b.status == 503 && b.headers["retry-after"] != nil, "either durable or refused: \(b.status)")
            #expect(try await Self.rows(server) == rowsBefore)
        }

        // 2. A cancel right after the journal's connections were cut (the
        // running export's own connection survives, so it stays cancellable).
        let lock = try await TableLock.lockUsers(server)
        let c = try #require(try await curl(server.url("/exports/csv?columns=notes"), method: "POST").json["exportId"] as? String)
        let d = try #require(try await curl(server.url("/exports/csv?columns=full_name"), method: "POST").json["exportId"] as? String)
        try await eventually("c runs") { try await Self.status(server, c) == "running" }
        #expect(try await Self.status(server, d) == "queued")
        let cut = try await server.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'gateway:%' AND state = 'idle'")
        #expect((Int(cut[0][0] ?? "") ?? 0) >= 1, "the journal had a pooled connection to cut")
        let cancel = try await curl(server.url("/exports/\(d)"), method: "DELETE")
        #expect(cancel.status == 200)
        #expect(try await server.sql("SELECT status, cancelled_at IS NOT NULL FROM gateway.exports WHERE id = '\(d)'").first == ["cancelled", "t"])
        try await lock.release()
        try await eventually("c completes") { try await Self.status(server, c) == "completed" }

        // 3. The database down: health says so within seconds; creates,
        // cancels and deletes are 503 and change nothing.
        let rowsBeforeStop = try await Self.rows(server)
        try await pg.stopServer()
        try await eventually(timeout: .seconds(10), "health 503") {
            let health = try await curl(server.url("/health"))
            return health.status == 503 && health.json["database"] as? String == "unreachable"
        }
        let refused = try await curl(server.url("/exports/csv?columns=id,email"), method: "POST")
        #expect(refused.status == 503 && refused.headers["retry-after"] != nil)
        #expect(refused.json["error"] as? String == "unavailable")
        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").status == 503)
        #expect(try await Self.status(server, a) == "completed", "a refused delete deleted nothing")

        try await pg.startServer()
        try await eventually(timeout: .seconds(10), "health 200") { try await curl(server.url("/health")).status == 200 }
        #expect(try await Self.rows(server) == rowsBeforeStop, "no row for the refused create, none gone for the refused delete")
        #expect(try await curl(server.url("/exports/\(a)/download")).status == 200)
        let next = try #require(try await curl(server.url("/exports/csv?columns=id,country_code"), method: "POST").json["exportId"] as? String)
        try await eventually("the next export succeeds") { try await Self.status(server, next) == "completed" }
        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").status == 204)
        #expect(try await server.sql("SELECT count(*) FROM gateway.exports WHERE id = '\(a)'")[0][0] == "0")
    }

    /// A journal that cannot be read at start (here its table is locked
    /// past the statement timeout) must not make every export id a 404: the
    /// gateway answers 503 until it has read it, then serves them all.
    @Test(.timeLimit(.minutes(2)))
    func aJournalUnreadableAtStartGives503UntilItIsRead() async throws {
        let pg = try await PrivatePostgres.start()
        defer { Task { await pg.destroy() } }
        let cache = try temporaryDirectory("journal-late")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let first = try await TestServer.start(rows: 3000, databaseURL: pg.url, cacheDirectory: cache)
        let a = try #require(try await curl(first.url("/exports/csv?columns=id"), method: "POST").json["exportId"] as? String)
        try await eventually("a completes") { try await Self.status(first, a) == "completed" }
        await first.stop(keepingCache: true)

        let lock = try await TableLock.lock("gateway.exports", databaseURL: pg.url)
        let server = try await TestServer.start(databaseURL: pg.url, seed: false, cacheDirectory: cache, exportsTuning: { $0.database.journalStatementTimeoutSeconds = 1 })
        defer { Task { await server.stop() } }
        let waiting = try await curl(server.url("/exports/\(a)/status"))
        #expect(waiting.status == 503 && waiting.headers["retry-after"] != nil, "not a 404 for an id the journal holds")
        let health = try await curl(server.url("/health"))
        #expect(health.status == 503 && health.json["journal"] as? String == "not read yet")
        #expect(try await curl(server.url("/exports/csv"), method: "POST").status == 503)
        try await lock.release()
        try await eventually("the journal is read") { try await Self.status(server, a) == "completed" }
        #expect(try await curl(server.url("/health")).status == 200)
        #expect(try await curl(server.url("/exports/\(a)/download")).status == 200)
    }

    /// A database that stops answering without closing anything (SIGSTOP:
    /// the kernel still accepts and acknowledges) bounds every request: health
    /// says so within seconds, a create gets 503 instead of hanging.
    @Test(.timeLimit(.minutes(2)))
    func aFrozenDatabaseGivesTimely503sNotHangs() async throws {
        let pg = try await PrivatePostgres.start()
        defer {
            Task {
                try? await pg.freeze(false)
                await pg.destroy()
            }
        }
        let server = try await TestServer.start(
            rows: 3000, databaseURL: pg.url,
            exportsTuning: {
                $0.database.journalStatementTimeoutSeconds = 1
                $0.database.connectTimeoutSeconds = 2
            })
        defer { Task { await server.stop() } }
        #expect(try await curl(server.url("/exports/csv?columns=id"), method: "POST").status == 202)
        try await pg.freeze(true)
        let clock = ContinuousClock()
        var started = clock.now
        try await eventually(timeout: .seconds(15), "health 503") { try await curl(server.url("/health"), ["--max-time", "10"]).status == 503 }
        #expect(clock.now - started < .seconds(10))
        started = clock.now
        let create = try await curl(server.url("/exports/csv?columns=email"), method: "POST", ["--max-time", "30"])
        #expect(create.status == 503, "refused, not hung: \(create.status)")
        #expect(clock.now - started < .seconds(15), "within the journal's timeouts: \(clock.now - started)")
        try await pg.freeze(false)
        try await eventually(timeout: .seconds(20), "health back") { try await curl(server.url("/health")).status == 200 }
        #expect(try await curl(server.url("/exports/csv?columns=email"), method: "POST").status == 202)
    }

    /// A session holding a lock on `users` (a long transaction) does not
    /// keep the gateway from starting: the seeding check gives up after 5 s.
    @Test(.timeLimit(.minutes(2)))
    func aLockedUsersTableDoesNotHoldUpTheStart() async throws {
        let (seeded, cache) = try await RestartTests.seededDatabase(rows: 3000)
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let lock = try await TableLock.lockUsers(databaseURL: seeded.databaseURL)
        let started = ContinuousClock.now
        let server = try await TestServer.start(databaseURL: seeded.databaseURL, seed: true, cacheDirectory: cache)
        defer { Task { await server.stop() } }
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(try await curl(server.url("/health")).status == 200)
        try await lock.release()
    }

    @Test(.timeLimit(.minutes(2)))
    func aRestartMidExportFailsItCleanlyAndAbortsItsLiveDownload() async throws {
        let pg = try await PrivatePostgres.start()
        defer { Task { await pg.destroy() } }
        let server = try await TestServer.start(rows: 3000, databaseURL: pg.url)
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        let id = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await eventually("running") { try await Self.status(server, id) == "running" }
        let reader = try startCurl(server.url("/exports/\(id)/download"))
        try await eventually("response head") { reader.hasHeaders }
        try await pg.restart()
        let result = await reader.wait()
        #expect(result.exitCode != 0, "the live download ends as an aborted transfer")
        try await eventually("failed") { try await Self.status(server, id) == "failed" }
        let error = try await curl(server.url("/exports/\(id)/status")).json["error"] as? String
        #expect(error == "the connection to the database was lost" || error == "the database query failed", "\(error ?? "nil")")
        #expect(server.files(in: "partial").isEmpty)
        _ = lock
        let next = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await eventually("the next export succeeds") { try await Self.status(server, next) == "completed" }
    }
}
