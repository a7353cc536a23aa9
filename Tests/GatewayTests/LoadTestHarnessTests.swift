import Foundation
import Testing

/// The load test harness (`loadtest`, built beside the tests) against a test
/// gateway through `Scripts/fault_proxy.py`. Through an honest proxy it
/// passes and has verified downloads; when the proxy flips a byte of each
/// download body, cuts bodies short, or ends chunked bodies early with the
/// final chunk, it fails (non-zero exit) and names that fault in result.json.
@Suite(.serialized)
struct LoadTestHarnessTests {
    static var proxyScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/fault_proxy.py").path
    }

    /// The `loadtest` executable: `swift build --build-tests` puts it in the
    /// same folder as the test runner (`.build/<configuration>/`).
    static var binary: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("loadtest").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/loadtest").path
    }

    struct HarnessResult: Decodable {
        let ok: Bool
        let errors: [String: Int]
        let counters: [String: Int]
    }

    /// The kinds each fault may show as, by what the harness was doing when
    /// it met it (a whole download, a range, a resumed or a gzip download).
    static let faults: [(mode: String, expected: String, allowed: Set<String>)] = [
        ("corrupt", "sha_mismatch", ["sha_mismatch", "range_mismatch", "resume_mismatch", "gzip_mismatch"]),
        ("truncate", "truncated", ["truncated"]),
        ("early-end", "size_mismatch", ["size_mismatch", "range_mismatch", "resume_mismatch", "gzip_mismatch"]),
    ]

    /// Starts the proxy in front of `server` and runs a short `mixed` scenario through it.
    static func harness(through mode: String, to server: TestServer) async throws -> (status: Int32, result: HarnessResult, report: String, log: String) {
        let proxy = try RunningProcess("python3", [Self.proxyScript, "--mode", mode, "--target", String(server.port)])
        // SIGKILL: a child of the test process starts with SIGTERM blocked.
        defer { proxy.kill9() }
        let port = try await proxy.listeningPort()
        let out = try temporaryDirectory("loadtest-\(mode)")
        defer { try? FileManager.default.removeItem(atPath: out) }
        // 12 sessions with fixed choices (seed 11): live, finished, streamed,
        // resumed, ranged and cancelled downloads of small exports.
        let run = try await run(
            Self.binary,
            [
                "mixed", "--base", "http://127.0.0.1:\(port)", "--duration", "2", "--rate", "6/s", "--seed", "11", "--drain", "20",
                "--pid", String(getpid()), "--out", out,
            ])
        let json = try Data(contentsOf: URL(fileURLWithPath: out + "/result.json"))
        let report = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        return (run.status, try JSONDecoder().decode(HarnessResult.self, from: json), report, run.stderr)
    }

    @Test(.timeLimit(.minutes(1)))
    func passesThroughAnHonestProxyWithEveryDownloadVerified() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "swift build --build-tests builds the loadtest product: \(Self.binary)")
        let server = try await TestServer.start(rows: 3000)
        defer { Task { await server.stop() } }
        let (status, result, report, log) = try await Self.harness(through: "none", to: server)
        #expect(status == 0, "\(log.suffix(3000))")
        #expect(result.ok && result.errors.isEmpty, "\(result.errors)")
        #expect((result.counters["downloadsVerified"] ?? 0) >= 5, "\(result.counters)")
        #expect((result.counters["rangesVerified"] ?? 0) + (result.counters["resumesVerified"] ?? 0) > 0, "\(result.counters)")
        #expect(report.contains("<svg"), "report.html has its plots")
        #expect(report.contains("resident memory"), "report.html plots the sampled process's memory")
    }

    @Test(.timeLimit(.minutes(1)), arguments: 0..<3)
    func failsAndNamesTheFaultWhenTheProxyDamagesBodies(fault: Int) async throws {
        let (mode, expected, allowed) = Self.faults[fault]
        let server = try await TestServer.start(rows: 3000)
        defer { Task { await server.stop() } }
        let (status, result, report, log) = try await Self.harness(through: mode, to: server)
        #expect(status != 0, "\(mode): the harness must fail")
        #expect(!result.ok)
        #expect((result.errors[expected] ?? 0) > 0, "\(mode): expected \(expected) among \(result.errors)\n\(log.suffix(2000))")
        // Nothing else went wrong: only the damage, as what it is.
        #expect(Set(result.errors.keys).isSubset(of: allowed), "\(mode): \(result.errors)")
        #expect(report.contains("<svg") && report.contains(expected))
    }
}
