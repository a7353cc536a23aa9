import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `scripts/run.sh`, the README's run command, stopped as people stop it:
/// Ctrl-C in a terminal (SIGINT to the script's whole process group) and
/// SIGTERM to the script alone. Either way the gateway gets one graceful
/// shutdown (a download of a finished file in progress ends whole), then the
/// private PostgreSQL is stopped, and nothing the script started is left.
///
/// The script runs from a copy of `scripts/` in a folder of its own (so its
/// `.pgdata/` is a throwaway cluster), with the tests' debug binary as
/// `GATEWAY_BIN` (no release build), in a session of its own as a
/// terminal's foreground job would be.
@Suite(.serialized)
struct RunScriptTests {
    /// A marker in the script's environment: every process it starts
    /// inherits it, so a survivor is found by it in /proc.
    static func processes(marked marker: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environ.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == "RUN_SH_TEST=" + marker }
        }.filter { pid in
            // A zombie is gone already (its parent has not reaped it yet).
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            return stat.split(separator: ")").last?.split(separator: " ").first != "Z"
        }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The project folder's two scripts, copied into a fresh folder.
    static func scriptFolder() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let folder = try temporaryDirectory("run-sh")
        // The postgres user must pass through it to its .pgdata.
        chmod(folder, 0o755)
        try FileManager.default.createDirectory(atPath: folder + "/scripts", withIntermediateDirectories: true)
        for name in ["run.sh", "lib.sh"] {
            try FileManager.default.copyItem(atPath: root + "/scripts/" + name, toPath: folder + "/scripts/" + name)
        }
        return folder
    }

    /// Starts the script in a session of its own; returns it and the gateway's URL.
    static func start(_ folder: String, marker: String, pgPort: Int) async throws -> (RunningProcess, String) {
        let script = try RunningProcess(
            "setsid", ["bash", folder + "/scripts/run.sh"],
            environment: [
                "RUN_SH_TEST": marker, "GATEWAY_BIN": RestartTests.binary, "DATABASE_URL": "", "PRIVATE_PG_PORT": String(pgPort),
                "HOST": "127.0.0.1", "PORT": "0", "CACHE_DIR": folder + "/cache", "SEED_ROWS": "3000", "API_TOKENS": "",
                "API_TOKENS_FILE": "", "SHUTDOWN_GRACE": "30", "LOG_LEVEL": "info",
            ])
        let port = try await script.listeningPort("the gateway started by run.sh listens", timeout: .seconds(120))
        return (script, "http://127.0.0.1:\(port)")
    }

    /// Waits for the script's end and checks that nothing of it is left.
    static func expectCleanStop(_ script: RunningProcess, marker: String, folder: String, expectedStatus: Int32) async throws {
        let stopped = Task { await script.wait() }
        let deadline = ContinuousClock.now + .seconds(90)
        while script.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        if script.isRunning { kill(-script.pid, SIGKILL) }
        let result = await stopped.value
        #expect(result.status == expectedStatus, "run.sh exited \(result.status); its output:\n\(result.stderr.suffix(3000))")
        #expect(!result.stderr.contains("second signal"), "the gateway got two signals:\n\(result.stderr.suffix(3000))")
        #expect(result.stderr.contains("shutting down"), "no graceful shutdown in:\n\(result.stderr.suffix(3000))")
        try await eventually(timeout: .seconds(10), "every process run.sh started has exited") { Self.processes(marked: marker).isEmpty }
        #expect(!FileManager.default.fileExists(atPath: folder + "/.pgdata/postmaster.pid"), "the private PostgreSQL is still running")
    }

    @Test(.timeLimit(.minutes(5)))
    func ctrlCAndSigtermStopTheGatewayGracefullyAndThenThePrivateDatabase() async throws {
        let folder = try Self.scriptFolder()
        let marker = UUID().uuidString
        let pgPort = try Self.freePort()
        defer {
            // Whatever happened, nothing of this test outlives it.
            for pid in Self.processes(marked: marker) { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: folder)
        }

        // Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group.
        var (script, base) = try await Self.start(folder, marker: marker, pgPort: pgPort)
        let id = try #require(try await curl(base + "/exports/csv?columns=id,email,full_name,notes", method: "POST").json["exportId"] as? String)
        try await eventually("the export completes") { try await curl(base + "/exports/\(id)/status").json["status"] as? String == "completed" }
        let whole = try await curl(base + "/exports/\(id)/download")
        #expect(whole.status == 200 && whole.body.count > 100_000)
        // A download of the finished file at 50 KB/s: it takes a few seconds,
        // which the shutdown's grace must give it.
        let slow = try startCurl(base + "/exports/\(id)/download", ["--limit-rate", "50K"])
        try await eventually("the slow download has started") { slow.bytesReceived > 0 }
        kill(-script.pid, SIGINT)
        let received = await slow.wait()
        #expect(
            received.exitCode == 0 && received.body == whole.body,
            "a download of a finished file was cut by Ctrl-C: curl \(received.exitCode), \(received.body.count) of \(whole.body.count) bytes")
        try await Self.expectCleanStop(script, marker: marker, folder: folder, expectedStatus: 130)

        // SIGTERM to the script alone (a service manager's stop): the same.
        (script, base) = try await Self.start(folder, marker: marker, pgPort: pgPort)
        #expect(try await curl(base + "/health").status == 200)
        kill(script.pid, SIGTERM)
        try await Self.expectCleanStop(script, marker: marker, folder: folder, expectedStatus: 143)
    }
}
