import Foundation
import Testing

/// Three gateway processes on one database and one cache folder, under
/// twelve clients for a minute (creates, cancels, deletes, live downloads,
/// status), while one of them is killed with `kill -9` and started again, or
/// frozen (SIGSTOP) past its lease and thawed, every few seconds
/// (`Scripts/chaos.py`). Afterwards, with every gateway restarted, every
/// acknowledgement holds on every gateway: a 202's export is completed with
/// the bytes of `psql \copy`, a cancel's 200 stays cancelled, a delete's 204
/// stays deleted (404); no live download that ended cleanly had other bytes;
/// no answer was a 5xx other than a 503; no gateway crashed. Operations whose
/// connection broke after they were sent count as unknown, not as failures.
struct ChaosTests {
    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/chaos.py").path
    }

    @Test(.timeLimit(.minutes(6)))
    func acknowledgementsSurviveKillsFreezesAndRestartsOfThreeGateways() async throws {
        let url = try await BigDatabase.fresh()
        let cache = try temporaryDirectory("chaos-cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let seed = Int.random(in: 0..<1_000_000)
        let result = try await run(
            "python3",
            [
                Self.script, "--binary", RestartTests.binary, "--database-url", url, "--cache-dir", cache,
                "--seconds", "60", "--threads", "12", "--seed", String(seed),
            ])
        // The summary (counts and failures) is on stdout; the timeline and the
        // log lines of the failing exports on stderr.
        #expect(result.status == 0, "chaos.py --seed \(seed): \(result.text)\n\(result.stderr.suffix(12000))")
    }
}
