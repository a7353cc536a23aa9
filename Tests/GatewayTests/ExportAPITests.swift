import Foundation
import Testing

@testable import Gateway

#if canImport(Glibc)
import Glibc
#endif

/// POST, status, download, DELETE, the queue and its limits, on a live server.
struct ExportAPITests {
    @Test func postAnswers202WithLocationThenCompletesWithHashNamedFile() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let created = try await curl(server.url("/exports/csv?country_code=GB"), method: "POST")
        #expect(created.status == 202)
        let id = try #require(created.json["exportId"] as? String)
        #expect(UUID(uuidString: id) != nil)
        #expect(created.headers["location"] == "/exports/\(id)/status")
        #expect(["queued", "running", "completed"].contains(created.json["status"] as? String))
        // A signed link (SignedLinkTests); the plain path is among the links.
        #expect((created.json["downloadUrl"] as? String)?.hasPrefix("/exports/\(id)/download?expires=") == true)
        #expect((created.json["links"] as? [String: String])?["download"] == "/exports/\(id)/download")

        try await eventually("completion") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "completed" }
        let status = try await curl(server.url("/exports/\(id)/status")).json
        let expected = try await server.psqlCopy(
            "SELECT id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes FROM users WHERE country_code = 'GB' ORDER BY id")
        let expectedRows = try await server.sql("SELECT count(*) FROM users WHERE country_code = 'GB'")[0][0].flatMap { Int($0) }
        #expect(status["rowsWritten"] as? Int == expectedRows)
        #expect(status["totalRows"] as? Int == expectedRows)
        #expect(status["totalRowsExact"] as? Bool == true)
        #expect(status["progress"] as? Double == 1)
        #expect(status["sizeBytes"] as? Int == expected.count)
        for field in ["createdAt", "startedAt", "completedAt"] {
            let text = try #require(status[field] as? String)
            #expect(ISO8601DateFormatter.rfc3339.date(from: text) != nil, "\(field) is RFC 3339: \(text)")
        }

        let download = try await curl(server.url("/exports/\(id)/download"))
        #expect(download.body == expected)
        let sha = try #require(status["sha256"] as? String)
        let path = NSTemporaryDirectory() + "dl-\(id).csv"
        try download.body.write(to: URL(fileURLWithPath: path))
        #expect(try await sha256Hex(ofFile: path) == sha)
        #expect(download.headers["etag"] == "\"\(sha)\"")
        #expect(download.headers["accept-ranges"] == "bytes")
        #expect(server.files(in: "objects") == ["\(sha).csv"])
        #expect(server.files(in: "partial").isEmpty)
    }

    @Test func deleteOfCompletedExportRemovesItAndItsFileAndIsHarmlessTwice() async throws {
        // No reuse after completion: the file goes with the last export that has it.
        let server = try await TestServer.start(cacheTTLSeconds: 0)
        defer { Task { await server.stop() } }
        let first = try await curl(server.url("/exports/csv"))
        let second = try await curl(server.url("/exports/csv"))
        let a = try #require(first.headers["x-export-id"])
        let b = try #require(second.headers["x-export-id"])
        #expect(first.body == second.body)
        try await eventually("both complete") {
            let first = try await curl(server.url("/exports/\(a)/status")).json["status"] as? String
            let second = try await curl(server.url("/exports/\(b)/status")).json["status"] as? String
            return first == "completed" && second == "completed"
        }
        // Two exports, one file (same bytes, same name).
        #expect(server.files(in: "objects").count == 1)

        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").status == 204)
        #expect(try await curl(server.url("/exports/\(a)/status")).status == 404)
        #expect(try await curl(server.url("/exports/\(a)"), method: "DELETE").status == 404)
        // b still refers to the file.
        #expect(server.files(in: "objects").count == 1)
        #expect(try await curl(server.url("/exports/\(b)/download")).body == first.body)

        #expect(try await curl(server.url("/exports/\(b)"), method: "DELETE").status == 204)
        #expect(server.files(in: "objects").isEmpty)
    }

    @Test func fullQueueAnswers429AndCancelledQueuedExportNeverStarts() async throws {
        let server = try await TestServer.start(maxConcurrent: 1, maxQueued: 1)
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        let running = try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String
        let queued = try await curl(server.url("/exports/csv?country_code=US"), method: "POST").json["exportId"] as? String
        let a = try #require(running)
        let b = try #require(queued)
        try await eventually("first running") { try await curl(server.url("/exports/\(a)/status")).json["status"] as? String == "running" }
        #expect(try await curl(server.url("/exports/\(b)/status")).json["status"] as? String == "queued")

        // A different request: an identical one would join the running export.
        let refused = try await curl(server.url("/exports/csv?country_code=FR"), method: "POST")
        #expect(refused.status == 429)
        #expect(refused.headers["retry-after"] != nil)
        #expect(refused.json["error"] as? String == "queue_full")

        let cancelled = try await curl(server.url("/exports/\(b)"), method: "DELETE")
        #expect(cancelled.status == 200)
        #expect(cancelled.json["status"] as? String == "cancelled")
        #expect(try await curl(server.url("/exports/\(b)/download")).status == 410)

        try await lock.release()
        try await eventually("first completes") { try await curl(server.url("/exports/\(a)/status")).json["status"] as? String == "completed" }
        // Room again, and the cancelled one was never started.
        let after = try await curl(server.url("/exports/\(b)/status")).json
        #expect(after["status"] as? String == "cancelled")
        #expect(after["startedAt"] is NSNull)
        // A second DELETE removes the cancelled export, which frees its id's slot.
        #expect(try await curl(server.url("/exports/\(b)"), method: "DELETE").status == 204)
        #expect(try await curl(server.url("/exports/\(b)/status")).status == 404)
        #expect(try await curl(server.url("/exports/csv"), method: "POST").status == 202)
    }

    @Test func cancelOfRunningExportStopsTheQueryRemovesThePartialFileAndAbortsReaders() async throws {
        // One COPY, frozen (SIGSTOP of its backend) once bytes are written,
        // so the cancel lands mid-COPY however fast this machine reads.
        let rows = 400_000
        let server = try await TestServer.start(rows: rows, exportsTuning: CSVOracleTests.parallel(1))
        defer { Task { await server.stop() } }
        var caught: (id: String, reader: CurlTransfer, pids: [Int32])?
        var objectsBefore: [String] = []
        for _ in 0..<5 where caught == nil {
            // An earlier try that finished first published its file.
            objectsBefore = server.files(in: "objects")
            let id = try #require(try await curl(server.url("/exports/csv"), method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
            let reader = try startCurl(server.url("/exports/\(id)/download"))
            try await eventually("bytes written") { (try await curl(server.url("/exports/\(id)/status")).json["bytesWritten"] as? Int ?? 0) > 0 }
            let pids = try await server.activeCopyPIDs()
            freezeBackends(pids)
            if !pids.isEmpty, try await server.exportStallsShort(id, of: rows) {
                caught = (id, reader, pids)
            } else {
                // It finished first: try again.
                pids.forEach { kill($0, SIGCONT) }
                _ = await reader.wait()
            }
        }
        let (id, reader, pids) = try #require(caught)
        defer { pids.forEach { kill($0, SIGCONT) } }
        #expect(!server.files(in: "partial").isEmpty)

        let cancelled = try await curl(server.url("/exports/\(id)"), method: "DELETE")
        #expect(cancelled.json["status"] as? String == "cancelled")

        let result = await reader.wait()
        #expect(result.status == 200)
        #expect(result.exitCode != 0, "a cancelled live download must not end like a complete one")
        // The worker gives up within a second, though the frozen backend cannot take the cancel.
        try await eventually("partial file removed") { server.files(in: "partial").isEmpty }
        pids.forEach { kill($0, SIGCONT) }
        #expect(server.files(in: "objects") == objectsBefore)
        try await eventually("query gone from the database") {
            try await server.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%' AND pid <> pg_backend_pid()")[0][0] == "0"
        }
        #expect(try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "cancelled")
    }

    @Test func cancelWhileTheQueryWaitsCancelsItInPostgres() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let lock = try await TableLock.lockUsers(server)
        let id = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        try await eventually("query waiting on the lock") { try await server.sql(waiting)[0][0] == "1" }
        #expect(try await curl(server.url("/exports/\(id)"), method: "DELETE").json["status"] as? String == "cancelled")
        try await eventually("query cancelled while the lock is still held") { try await server.sql(waiting)[0][0] == "0" }
        try await lock.release()
        #expect(server.files(in: "partial").isEmpty)
        #expect(try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "cancelled")
    }
}

extension ISO8601DateFormatter {
    static var rfc3339: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
