import Foundation
import Testing

@testable import Gateway

/// Many tokens at once is the normal case: one token cannot use up what the
/// others need. Past its own bounds (export ids waiting or running, exports
/// asked for per minute) that token alone gets 429 with `Retry-After`, while
/// another token is served; the next run a worker takes is the oldest of the
/// token with the fewest running; and a full cache makes room by evicting
/// (a token past its share evicts its own files, never another's) instead of
/// acknowledging exports that cannot finish.
@Suite(.serialized)
struct TenantTests {
    static let alice = AccessTests.alice
    static let bob = AccessTests.bob

    static func post(_ server: TestServer, _ query: String, token: String) async throws -> CurlResult {
        try await curl(server.url("/exports/csv?" + query), method: "POST", AccessTests.bearer(token))
    }

    static func status(_ server: TestServer, _ id: String, token: String) async throws -> [String: Any] {
        try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(token)).json
    }

    static func waitForStatus(_ server: TestServer, _ id: String, _ status: String, token: String) async throws {
        try await eventually(status) { try await Self.status(server, id, token: token)["status"] as? String == status }
    }

    @Test(.timeLimit(.minutes(2)))
    func oneTokenPastItsQueueBoundIsRefusedAloneAndWorkersServeTheTokenWithFewestRunning() async throws {
        let server = try await AccessTests.server { configuration in
            configuration.exports.maxConcurrent = 2
            configuration.exports.maxQueued = 20
            configuration.exports.tokenMaxActive = 3
        }
        defer { Task { await server.stop() } }
        // The table locked: alice's exports wait on it, running or queued.
        let lock = try await TableLock.lockUsers(server)
        var mine: [String] = []
        for code in ["US", "DE", "FR"] {
            let created = try await Self.post(server, "country_code=\(code)", token: Self.alice)
            #expect(created.status == 202)
            mine.append(try #require(created.json["exportId"] as? String))
        }
        // Two of them run (which two depends on when the claim loop held a
        // worker), the third waits in the queue.
        var running: [String] = []
        try await eventually("two of alice's exports run") {
            running = []
            for id in mine where try await Self.status(server, id, token: Self.alice)["status"] as? String == "running" { running.append(id) }
            return running.count == 2
        }
        let queued = try #require(mine.first { !running.contains($0) })
        // A fourth, even one that would only join a running export: alice alone is refused.
        for query in ["country_code=JP", "country_code=\(["US", "DE", "FR"][mine.firstIndex(of: running[0]) ?? 0])"] {
            let refused = try await Self.post(server, query, token: Self.alice)
            #expect(refused.status == 429, "\(query)")
            #expect(refused.json["error"] as? String == "token_queue_full")
            #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 >= 1)
        }
        // Bob is served, though alice's queued export waits before his.
        let bobs = try await Self.post(server, "country_code=GB", token: Self.bob)
        #expect(bobs.status == 202)
        let bobID = try #require(bobs.json["exportId"] as? String)
        // A worker frees (alice cancels a running one): alice has one running,
        // bob none, so bob's export is the one it takes, not alice's older one.
        #expect(try await curl(server.url("/exports/\(running[0])"), method: "DELETE", AccessTests.bearer(Self.alice)).status == 200)
        try await eventually("bob's export runs") { try await Self.status(server, bobID, token: Self.bob)["status"] as? String == "running" }
        #expect(try await Self.status(server, queued, token: Self.alice)["status"] as? String == "queued")
        try await lock.release()
        for id in [running[1], queued] { try await Self.waitForStatus(server, id, "completed", token: Self.alice) }
        try await Self.waitForStatus(server, bobID, "completed", token: Self.bob)
        // Room again for alice.
        #expect(try await Self.post(server, "country_code=JP", token: Self.alice).status == 202)
    }

    @Test(.timeLimit(.minutes(2)))
    func oneTokenPastItsCreatesPerMinuteIsRefusedAloneUntilItsMinuteEnds() async throws {
        let server = try await AccessTests.server { configuration in
            configuration.exports.tokenCreatesPerMinute = 5
        }
        defer { Task { await server.stop() } }
        for _ in 0..<5 { #expect(try await Self.post(server, "columns=id", token: Self.alice).status == 202) }
        let refused = try await Self.post(server, "columns=id", token: Self.alice)
        #expect(refused.status == 429)
        #expect(refused.json["error"] as? String == "token_rate_limited")
        let wait = Int(refused.headers["retry-after"] ?? "") ?? 0
        #expect((1...60).contains(wait), "Retry-After \(wait)")
        // Counted in the database, so a refusal changes nothing there either.
        #expect(try await server.sql("SELECT count(*) FROM gateway.exports WHERE owner = 'alice'")[0][0] == "5")
        #expect(try await Self.post(server, "columns=id", token: Self.bob).status == 202)
    }

    @Test(.timeLimit(.minutes(2)))
    func aFullCacheEvictsTheLeastRecentlyUsedFileWith410InsteadOfAcknowledgingWhatCannotFinish() async throws {
        // 3,000 rows make about 380 KB of CSV: room for one full file and a bit.
        let server = try await TestServer.start(cacheMaxBytes: 700 * 1024)
        defer { Task { await server.stop() } }
        let a = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await RetentionTests.waitForStatus(server, a, "completed")
        // b needs a's room, and a is still referred to: a's file is evicted,
        // and a answers 410 (durably: every gateway and a restart say so).
        let b = try await curl(server.url("/exports/csv?delimiter=;"), method: "POST")
        #expect(b.status == 202)
        let bID = try #require(b.json["exportId"] as? String)
        try await RetentionTests.waitForStatus(server, bID, "completed")
        for path in ["/exports/\(a)/status", "/exports/\(a)/download"] {
            let gone = try await curl(server.url(path))
            #expect(gone.status == 410, "\(path)")
            #expect(gone.json["error"] as? String == "export_evicted")
        }
        #expect(try await server.sql("SELECT expired_reason FROM gateway.exports WHERE id = '\(a)'")[0][0] == "evicted")
        let sha = try #require(try await curl(server.url("/exports/\(bID)/status")).json["sha256"] as? String)
        try await eventually("a's file removed") { server.files(in: "objects") == ["\(sha).csv"] }
        #expect(try await curl(server.url("/exports/\(bID)/download")).status == 200)
    }

    @Test(.timeLimit(.minutes(2)))
    func anExportEstimatedLargerThanTheCacheIs507BeforeItIsAcknowledged() async throws {
        let server = try await TestServer.start(cacheMaxBytes: 200 * 1024)
        defer { Task { await server.stop() } }
        let refused = try await curl(server.url("/exports/csv"), method: "POST")
        #expect(refused.status == 507)
        #expect(refused.json["error"] as? String == "cache_full")
        #expect((refused.json["message"] as? String)?.contains("CACHE_MAX_BYTES") == true)
        // Nothing acknowledged, nothing kept.
        #expect(try await server.sql("SELECT count(*) FROM gateway.exports")[0][0] == "0")
        #expect(server.files(in: "partial").isEmpty)
        let small = try await curl(server.url("/exports/csv?columns=id"))
        let expected = try await server.psqlCopy("SELECT id FROM users ORDER BY id")
        #expect(small.exitCode == 0 && small.body == expected)
    }

    @Test(.timeLimit(.minutes(2)))
    func aTokenPastItsCacheShareEvictsItsOwnFilesNeverAnothers() async throws {
        // 1 MiB, half a token's: each full file (about 380 KB) fits, two of one token do not.
        let server = try await AccessTests.server(rows: 3000) { configuration in
            configuration.cache.maxBytes = 1 << 20
        }
        defer { Task { await server.stop() } }
        let b1 = try #require(try await Self.post(server, "", token: Self.bob).json["exportId"] as? String)
        try await Self.waitForStatus(server, b1, "completed", token: Self.bob)
        let a1 = try #require(try await Self.post(server, "delimiter=;", token: Self.alice).json["exportId"] as? String)
        try await Self.waitForStatus(server, a1, "completed", token: Self.alice)
        // Alice's second would take her past her share: her own first goes, not bob's.
        let a2 = try #require(try await Self.post(server, "delimiter=%7C", token: Self.alice).json["exportId"] as? String)
        try await Self.waitForStatus(server, a2, "completed", token: Self.alice)
        #expect(try await curl(server.url("/exports/\(a1)/status"), AccessTests.bearer(Self.alice)).status == 410)
        #expect(try await curl(server.url("/exports/\(b1)/download"), AccessTests.bearer(Self.bob)).status == 200)
        #expect(try await curl(server.url("/exports/\(a2)/download"), AccessTests.bearer(Self.alice)).status == 200)
    }
}
