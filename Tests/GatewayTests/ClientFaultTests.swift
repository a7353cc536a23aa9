import Foundation
import Testing

@testable import Gateway

/// Careless and hostile clients against the gateway binary, whose open
/// descriptors and memory the test can watch: clients that hang up
/// mid-download, slowloris, idle connections past MAX_CONNECTIONS, malformed
/// and oversized requests, bytes that are not UTF-8 in every parameter.
/// The process stays up, answers 4xx (never 5xx) to bad input, keeps
/// answering /health, and its descriptors go back to where they were.
@Suite(.serialized)
struct ClientFaultTests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/clients.py").path
    }

    static func descriptors(_ pid: pid_t) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    static func port(_ base: String) -> String { String(base.split(separator: ":").last ?? "") }

    @Test(.timeLimit(.minutes(3)))
    func hangUpsSlowlorisAndIdleFloodsLeaveNothingBehind() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("clients")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let (gateway, base) = try await RestartTests.launch(
            databaseURL: url, cacheDirectory: cache,
            environment: [
                "REQUEST_HEADER_TIMEOUT": "2", "KEEP_ALIVE_TIMEOUT": "2", "MAX_CONNECTIONS": "100",
            ])
        defer { gateway.terminate() }
        let done = try await ProcessFaultTests.finishedExport(base)
        _ = try await curl(base + "/exports/\(done.id)/download", ["-r", "0-99"])
        try await Task.sleep(for: .milliseconds(300))
        let baseline = Self.descriptors(gateway.pid)

        // 300 clients start a 52 MB download and hang up after a few KB, half with a reset.
        let hangUps = try await run("python3", [Self.script, "disconnect", "127.0.0.1", Self.port(base), "/exports/\(done.id)/download", "300"])
        #expect(hangUps.text.contains("done 300"), "\(hangUps.stderr)")
        try await eventually(timeout: .seconds(15), "descriptors back to \(baseline)") { Self.descriptors(gateway.pid) <= baseline }

        // 150 slowloris connections: closed within the header timeout, health answered meanwhile.
        let slow = try await run("python3", [Self.script, "slowloris", "127.0.0.1", Self.port(base), "150", "6"])
        #expect(slow.text.contains("closed 150 of 150"), "\(slow.text)")
        #expect(slow.text.contains("health 200"), "\(slow.text)")
        try await eventually(timeout: .seconds(10), "descriptors back after slowloris") { Self.descriptors(gateway.pid) <= baseline }

        // 120 idle connections, past MAX_CONNECTIONS=100: a new one still gets
        // its health check, and a clear 503 for anything else.
        let idle = try await run("python3", [Self.script, "idle", "127.0.0.1", Self.port(base), "120", "1"])
        #expect(idle.text.contains("health 200 lookup 503"), "\(idle.text)")
        try await eventually(timeout: .seconds(10), "descriptors back after the idle flood") { Self.descriptors(gateway.pid) <= baseline }
        #expect(try await curl(base + "/health").status == 200)
    }

    /// Clients that ask for a download and never read hold chunks in their
    /// sockets' queues: with a tiny budget they hold all of it, and other
    /// downloads wait for memory (they are not cut). The wait is bounded by
    /// SEND_TIMEOUT (5 s here): the clients that took nothing are cut then,
    /// and a normal download completes, whole.
    @Test(.timeLimit(.minutes(2)))
    func clientsThatNeverReadHoldOtherDownloadsBackForAtMostTheSendTimeout() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("stuck")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["DOWNLOAD_BUFFER_BYTES": "512K", "SEND_TIMEOUT": "5"])
        defer { gateway.terminate() }
        let done = try await ProcessFaultTests.finishedExport(base)
        async let stuck = run("python3", [Self.script, "stuck", "127.0.0.1", Self.port(base), "/exports/\(done.id)/download", "24", "12"])
        try await Task.sleep(for: .seconds(1))
        let started = ContinuousClock.now
        let normal = try await curl(base + "/exports/\(done.id)/download", ["--max-time", "60"])
        #expect(normal.exitCode == 0 && normal.body.count == done.size, "the download completes whole")
        #expect(ContinuousClock.now - started < .seconds(30))
        let path = NSTemporaryDirectory() + "stuck-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try normal.body.write(to: URL(fileURLWithPath: path))
        #expect(try await sha256Hex(ofFile: path) == done.sha)
        let result = try await stuck
        #expect(result.text.hasPrefix("closed"), "\(result.text) \(result.stderr)")
        #expect(!result.text.hasPrefix("closed 0 "), "clients that took nothing were cut: \(result.text)")
    }

    /// No client that keeps reading is cut, however many others share the
    /// download memory: 30 clients at 16 KB/s (the floor the README
    /// promises) and 10 at 1 MB/s (curl's `--limit-rate` reads in bursts and
    /// sleeps for seconds between them) on a 256 KiB budget, so that readers
    /// wait for memory the whole time, for 15 s (three times the 5 s after
    /// which the gateway used to cut a client that stalled while others
    /// waited). Every curl is still reading when its own time limit ends
    /// it (exit 28), none was cut (exit 18 or 56), and the gateway cut no
    /// one; then a download of the whole file still completes.
    @Test(.timeLimit(.minutes(2)))
    func slowButSteadyReadersAreNeverCutWhileOthersWaitForMemory() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("steady")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["DOWNLOAD_BUFFER_BYTES": "256K", "LOG_LEVEL": "debug"])
        defer { gateway.terminate() }
        let done = try await ProcessFaultTests.finishedExport(base)
        let rates = Array(repeating: "16K", count: 30) + Array(repeating: "1M", count: 10)
        let transfers = try rates.map { rate in
            try startCurl(base + "/exports/\(done.id)/download", ["--limit-rate", rate, "--max-time", "15"])
        }
        var codes: [Int32] = []
        var smallest = Int.max
        for transfer in transfers {
            let result = await transfer.wait()
            codes.append(result.exitCode)
            smallest = min(smallest, result.body.count)
        }
        #expect(codes.allSatisfy { $0 == 28 }, "curl exit codes (28: still reading at its time limit; 18/56: cut): \(codes)")
        // Each client got bytes the whole time (16 KB/s for 15 s is 240 KB).
        #expect(smallest > 100_000, "a client received only \(smallest) bytes")
        let cuts = gateway.stderrSoFar.components(separatedBy: "closing a connection whose client takes nothing").count - 1
        #expect(cuts == 0, "the gateway cut \(cuts) clients that were reading")
        let whole = try await curl(base + "/exports/\(done.id)/download", ["--max-time", "60"])
        #expect(whole.exitCode == 0 && whole.body.count == done.size)
    }

    /// SEND_TIMEOUT cuts a client that takes nothing, not one that reads
    /// slowly. A client that read 8 MB fast and then 100 KB/s leaves megabytes
    /// in the server's socket buffer: no write of the server completes for
    /// far longer than the 5 s timeout (SEND_TIMEOUT here), yet the kernel keeps sending it data
    /// (`tcpi_last_data_sent`), so it is not cut; one that reads nothing is.
    @Test(.timeLimit(.minutes(2)))
    func aSlowReaderIsNotCutButOneThatTakesNothingIs() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("paced")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let (gateway, base) = try await RestartTests.launch(databaseURL: url, cacheDirectory: cache, environment: ["SEND_TIMEOUT": "5", "LOG_LEVEL": "debug"])
        defer { gateway.terminate() }
        let done = try await ProcessFaultTests.finishedExport(base)
        let path = "/exports/\(done.id)/download"
        async let stuck = run("python3", [Self.script, "stuck", "127.0.0.1", Self.port(base), path, "1", "15"])
        let paced = try await run("python3", [Self.script, "paced", "127.0.0.1", Self.port(base), path, "100000", "15"])
        #expect(paced.text.hasPrefix("alive"), "\(paced.text)")
        #expect(try await stuck.text.hasPrefix("closed 1 of 1"), "the client that took nothing was cut")
        // The paced client would see a cut only once it had drained megabytes
        // of socket buffer: the server's log says whom it cut.
        let cuts = gateway.stderrSoFar.components(separatedBy: "closing a connection whose client takes nothing").count - 1
        #expect(cuts == 1, "only the client that took nothing was cut: \(cuts) \(gateway.stderrSoFar.split(separator: "\n").filter { $0.contains("no data lately") || $0.contains("takes nothing") })")
    }

    @Test(.timeLimit(.minutes(2)))
    func malformedRequestsAndBytesThatAreNotUTF8Get4xx() async throws {
        let server = try await Shared.server.get()
        let battery = try await run("python3", [Self.script, "malformed", "127.0.0.1", String(server.port)])
        #expect(battery.status == 0, "\(battery.text)")
        // Every parameter, its name and the export id in the path, with bytes that are not UTF-8.
        for parameter in ExportRequest.parameterNames {
            for bytes in ["%FF", "%C3", "%ED%A0%80", "%C0%AF", "%F4%90%80%80", "a%80"] {
                let result = try await curl(server.url("/exports/csv?\(parameter)=\(bytes)"), method: "POST")
                #expect(result.status == 400, "\(parameter)=\(bytes)")
                #expect(result.json["parameter"] as? String == parameter, "\(parameter)=\(bytes)")
            }
        }
        #expect(try await curl(server.url("/exports/csv?col%FFumns=id"), method: "POST").status == 400)
        #expect(try await curl(server.url("/exports/%FF%FE/status")).status == 404)
        #expect(try await curl(server.url("/health")).status == 200)
    }
}
