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
                let found = try await server.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND query LIKE 'COPY%' AND query NOT LIKE '%id <%'")
                if let pid = found.first?.first.flatMap({ $0.flatMap { Int32($0) } }) {
                    kill(pid, SIGSTOP)
                    let run = try #require(server.exportRun(id))
                    if run.status == .running, run.pieces == 3 { return (id, pid) }
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

extension TestServer {
    /// The run behind an export id, as the manager holds it.
    func exportRun(_ exportID: String) -> ExportRun? {
        UUID(uuidString: exportID).flatMap { self.manager.job($0) }?.run
    }
}
