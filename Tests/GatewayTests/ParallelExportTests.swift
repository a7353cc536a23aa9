import Foundation
import Testing

@testable import Gateway

#if canImport(Glibc)
import Glibc
#endif

/// A parallel export (several COPYs under one snapshot, later pieces
/// spooled on disk and stitched in order) ends as one COPY would: the same
/// bytes, and on a cancel, a failed piece or a shutdown, no piece left
/// running and no spool file left behind. The byte-for-byte checks of every
/// option are in `CSVOracleTests` (parallelism 1 and 3).
@Suite(.serialized) struct ParallelExportTests {
    static let rows = 400_000

    static func server() async throws -> TestServer {
        try await TestServer.start(rows: Self.rows, exportsTuning: CSVOracleTests.parallel(3))
    }

    /// Starts exports until one is caught while its last piece (a range
    /// open at the top, `id >= …` with no `id <`) is being read by its own
    /// backend, and freezes that backend with SIGSTOP: the export then
    /// waits for that piece, whatever else it has done.
    static func exportWithFrozenLastPiece(_ server: TestServer) async throws -> (id: String, pid: Int32) {
        for _ in 0..<5 {
            let id = try #require(try await curl(server.url("/exports/csv"), method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                let found = try await server.sql(
                    "SELECT pid, substring(query FROM 'id >= ([0-9]+)') FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY%' AND query NOT LIKE '%id <%'"
                )
                if let pid = found.first?.first.flatMap({ $0.flatMap { Int32($0) } }),
                    let from = found.first?.last.flatMap({ $0.flatMap { Int($0) } })
                {
                    freezeBackends([pid])
                    // Frozen after its first rows are in its spool: a piece
                    // that ends with none is read by the leader instead
                    // (seen: the export then completed, as it should).
                    let before = Int(try await server.sql("SELECT count(*) FROM users WHERE id < \(from)")[0][0] ?? "") ?? Self.rows
                    if try await server.exportStallsShort(id, of: Self.rows, past: before), server.exportRun(id)?.pieces == 3 { return (id, pid) }
                    kill(pid, SIGCONT)
                    break
                }
                // Finished before a piece was caught: try another.
                let status = server.exportRun(id)?.status
                if status == .completed || status == .failed || status == .cancelled { break }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        struct NotCaught: Error {}
        throw NotCaught()
    }

    static func activeCopies(_ server: TestServer) async throws -> Int {
        Int(try await server.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%' AND state <> 'idle'")[0][0] ?? "") ?? -1
    }

    @Test func aParallelExportIsTheBytesOfOneCopyLiveAndFinished() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let expected = try await server.psqlCopy(LiveDownloadTests.select)
        let id = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        let live = try await curl(server.url("/exports/\(id)/download"))
        #expect(live.exitCode == 0)
        #expect(live.body == expected)
        let run = try #require(server.exportRun(id))
        #expect(run.pieces == 3)
        let status = try await curl(server.url("/exports/\(id)/status")).json
        #expect(status["rowsWritten"] as? Int == Self.rows)
        #expect(status["bytesWritten"] as? Int == expected.count)
        #expect(server.files(in: "partial").isEmpty, "no spool file is left")
    }

    @Test func cancelStopsEveryPieceAndLeavesNoSpool() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let (id, pid) = try await Self.exportWithFrozenLastPiece(server)
        defer { kill(pid, SIGCONT) }
        #expect(server.files(in: "partial").count >= 2, "the export's file and a spool file")
        let cancelled = try await curl(server.url("/exports/\(id)"), method: "DELETE")
        #expect(cancelled.status == 200)
        // The frozen piece's thread gives up within a second of the cancel,
        // though its backend cannot even take the cancel.
        try await eventually(timeout: .seconds(10), "files removed") { server.files(in: "partial").isEmpty }
        kill(pid, SIGCONT)
        try await eventually(timeout: .seconds(10), "no COPY left") { try await Self.activeCopies(server) == 0 }
        #expect(try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "cancelled")
        #expect(server.files(in: "objects").isEmpty)
    }

    @Test func aFailedPieceFailsTheExportAndAbortsLiveReaders() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let (id, pid) = try await Self.exportWithFrozenLastPiece(server)
        let reader = try startCurl(server.url("/exports/\(id)/download"))
        try await eventually("response head") { reader.hasHeaders }
        _ = try await server.sql("SELECT pg_terminate_backend(\(pid))")
        kill(pid, SIGCONT)
        let result = await reader.wait()
        #expect(result.status == 200)
        #expect(result.exitCode != 0, "an aborted transfer, not a short file that looks complete (exit \(result.exitCode))")
        try await eventually("failed") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "failed" }
        try await eventually(timeout: .seconds(10), "files removed") { server.files(in: "partial").isEmpty }
        try await eventually(timeout: .seconds(10), "no COPY left") { try await Self.activeCopies(server) == 0 }
        #expect(server.files(in: "objects").isEmpty)
        // The next export is whole (kept connections that were fine are reused, broken ones are not).
        let again = try await curl(server.url("/exports/csv"), ["-H", "Cache-Control: no-cache"])
        #expect(again.exitCode == 0)
        #expect(again.body == (try await server.psqlCopy(LiveDownloadTests.select)))
    }

    /// A statement that wants `users` exclusively and arrives between the
    /// leader's lock and its pieces' would wait for the leader, and the
    /// pieces behind it, while the leader waits for the pieces: a deadlock
    /// PostgreSQL cannot see. The pieces give up their lock wait and the
    /// leader reads their ranges. The window is a few milliseconds, so the
    /// lock is asked at several delays after the POST until a piece is seen
    /// giving up; every export must complete (a deadlock never would) with
    /// psql's bytes.
    @Test func anExclusiveLockAskedMidExportDoesNotDeadlockThePieces() async throws {
        let log = CapturedLog()
        let server = try await TestServer.start(rows: Self.rows, logHandler: log, exportsTuning: CSVOracleTests.parallel(3))
        defer { Task { await server.stop() } }
        let expected = try await server.psqlCopy(LiveDownloadTests.select)
        var hits = 0
        for attempt in 0..<24 where hits == 0 {
            let id = try #require(try await curl(server.url("/exports/csv"), method: "POST", ["-H", "Cache-Control: no-cache"]).json["exportId"] as? String)
            try await Task.sleep(for: .milliseconds(attempt % 12))
            // No lock_timeout: behind a deadlock this would wait for ever.
            let locker = Task { try await server.sql("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; COMMIT") }
            try await eventually(timeout: .seconds(30), "export \(attempt) completes") { server.exportRun(id)?.status == .completed }
            _ = try await locker.value
            #expect(try await curl(server.url("/exports/\(id)/download")).body == expected)
            hits = log.lines.filter { $0.contains("a piece could not start") }.count
        }
        // Not a failure when the window was never hit (a slow machine), only less proof.
        print("ParallelExportTests: pieces that gave up their lock wait: \(hits)")
    }

    /// A parallel export needs no more room under CACHE_MAX_BYTES than one
    /// COPY: a spool's bytes move to the file as they are copied in.
    @Test func aParallelExportFitsWhereOneCopyFits() async throws {
        let seeded = try await Self.server()
        let size = try await seeded.psqlCopy(LiveDownloadTests.select).count
        let url = seeded.databaseURL
        await seeded.stop()
        let server = try await TestServer.start(rows: Self.rows, databaseURL: url, seed: false, cacheMaxBytes: size + size / 10, exportsTuning: CSVOracleTests.parallel(3))
        defer { Task { await server.stop() } }
        let id = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await eventually(timeout: .seconds(60), "ended") { server.exportRun(id).map { $0.status != .queued && $0.status != .running } ?? false }
        #expect(server.exportRun(id)?.status == .completed)
        #expect(server.exportRun(id)?.pieces == 3)
        #expect(server.manager.cacheBytes == size)
    }

    /// Records larger than the 256 KiB staging block, at the end of the
    /// last piece, are written on their own and still counted.
    @Test func recordsLargerThanTheStagingBlockAreCounted() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        _ = try await server.sql("UPDATE users SET notes = repeat('x', 300000) WHERE id >= (SELECT max(id) - 1 FROM users)")
        let expected = try await server.psqlCopy(LiveDownloadTests.select)
        let streamed = try await curl(server.url("/exports/csv"), ["-H", "Cache-Control: no-cache"])
        #expect(streamed.body == expected)
        let id = try #require(streamed.headers["x-export-id"])
        #expect(server.exportRun(id)?.pieces == 3)
        let status = try await curl(server.url("/exports/\(id)/status")).json
        #expect(status["rowsWritten"] as? Int == Self.rows)
    }

    /// `rowsWritten` never counts rows that are not in the file yet (those a
    /// later piece has read into its spool); `rowsRead` does.
    @Test func progressCountsOnlyRowsInTheFile() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let id = try #require(try await curl(server.url("/exports/csv?columns=id&header=false"), method: "POST").json["exportId"] as? String)
        var seen: [(rows: Int, bytes: Int)] = []
        while server.exportRun(id)?.status == .running || server.exportRun(id)?.status == .queued {
            let status = try await curl(server.url("/exports/\(id)/status")).json
            if let rows = status["rowsWritten"] as? Int, let bytes = status["bytesWritten"] as? Int { seen.append((rows, bytes)) }
            // rowsRead (what the bar counts) adds what the pieces have spooled: never less, never past the table.
            if let rows = status["rowsWritten"] as? Int, let read = status["rowsRead"] as? Int {
                #expect(rows <= read && read <= Self.rows, "rowsWritten \(rows), rowsRead \(read)")
            }
        }
        let final = try await curl(server.url("/exports/\(id)/status")).json
        #expect(final["rowsRead"] as? Int == Self.rows && final["rowsWritten"] as? Int == Self.rows)
        let file = try await curl(server.url("/exports/\(id)/download")).body
        #expect(file.count { $0 == UInt8(ascii: "\n") } == Self.rows)
        #expect(seen.count > 1)
        for (rows, bytes) in seen {
            // One id a line: the records in the first `bytes` bytes are its line ends.
            let inFile = file.prefix(bytes).count { $0 == UInt8(ascii: "\n") }
            #expect(rows <= inFile, "status says \(rows) rows while the file's first \(bytes) bytes hold \(inFile)")
        }
    }

    /// Kept export connections whose backends stopped answering (frozen
    /// with SIGSTOP: the kernel still holds the socket open) are found out
    /// by a one-second ping and replaced; the export completes.
    @Test func frozenKeptConnectionsAreReplaced() async throws {
        let server = try await Self.server()
        defer { Task { await server.stop() } }
        let expected = try await server.psqlCopy(LiveDownloadTests.select)
        #expect(try await curl(server.url("/exports/csv"), ["-H", "Cache-Control: no-cache"]).body == expected)
        try await eventually("export connections kept") { !server.manager.workers.idleBackendPIDs.isEmpty }
        let frozen = server.manager.workers.idleBackendPIDs
        freezeBackends(frozen)
        defer { frozen.forEach { kill($0, SIGCONT) } }
        let result = try await curl(server.url("/exports/csv"), ["-H", "Cache-Control: no-cache", "--max-time", "30"])
        #expect(result.exitCode == 0)
        #expect(result.body == expected)
    }

    @Test func aShutdownStopsEveryPieceAndLeavesNoSpool() async throws {
        let server = try await Self.server()
        let (_, pid) = try await Self.exportWithFrozenLastPiece(server)
        defer { kill(pid, SIGCONT) }
        let started = ContinuousClock.now
        await server.stop(keepingCache: true)
        #expect(ContinuousClock.now - started < .seconds(10))
        // The export's worker and its pieces end within a second or so of the stop.
        try await eventually(timeout: .seconds(10), "files removed") { server.files(in: "partial").isEmpty }
        try? FileManager.default.removeItem(atPath: server.cacheDirectory)
    }
}
