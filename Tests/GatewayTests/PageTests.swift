import Foundation
import Testing
@testable import Gateway

/// The page at `/` in a real headless Chromium (Debian's `chromium` and
/// `chromium-driver`, driven by Debian's `python3-selenium`; `scripts/test.sh`
/// installs them): `Scripts/page_test.py` uses it as a new user would, with
/// and without tokens, against a live test server, and compares what the
/// browser downloads with psql's bytes. Its screenshots go to
/// `PAGE_SCREENSHOTS` (default `.build/page-screenshots`).
@Suite(.serialized) struct PageTests {
    static let python = "/usr/bin/python3"

    static var screenshots: String {
        ProcessInfo.processInfo.environment["PAGE_SCREENSHOTS"] ?? FileManager.default.currentDirectoryPath + "/.build/page-screenshots"
    }

    static var script: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/page_test.py").path
    }

    /// Rows enough that the throttled export takes seconds; one COPY per
    /// export, so the script can slow the one backend it finds.
    static func server(tokens: Bool) async throws -> TestServer {
        try await TestServer.start(rows: 40_000) { configuration in
            configuration.exports.parallelism = 1
            if tokens {
                configuration.access.tokens = (try? APITokens.parse(list: "alice:\(AccessTests.alice), \(AccessTests.bob)", file: nil)) ?? APITokens(tokens: [])
            }
        }
    }

    static func drive(_ server: TestServer, _ extra: [String]) async throws {
        for tool in [Self.python, "/usr/bin/chromium", "/usr/bin/chromedriver"] {
            try #require(FileManager.default.isExecutableFile(atPath: tool), "\(tool) is missing: run the tests with scripts/test.sh, which installs it")
        }
        let selenium = try await run(Self.python, ["-c", "import selenium"])
        try #require(selenium.status == 0, "python3-selenium is missing: run the tests with scripts/test.sh, which installs it")
        try FileManager.default.createDirectory(atPath: Self.screenshots, withIntermediateDirectories: true)
        let result = try await run(Self.python, [
            Self.script, "--base", server.url(""), "--db", server.databaseURL, "--psql", TestServer.psql, "--out", Self.screenshots,
        ] + extra)
        #expect(result.status == 0, "\(result.stderr.suffix(4000))\(result.text.suffix(2000))")
    }

    @Test(.timeLimit(.minutes(5)))
    func aNewUserStartsWatchesDownloadsAndCancelsExportsInChromiumOnAnOpenGateway() async throws {
        let server = try await Self.server(tokens: false)
        defer { Task { await server.stop() } }
        try await Self.drive(server, [])
    }

    @Test(.timeLimit(.minutes(5)))
    func withTokensThePageAsksForOneKeepsItOutOfURLsAndShowsOnlyItsExports() async throws {
        let server = try await Self.server(tokens: true)
        defer { Task { await server.stop() } }
        // Bob's export, which alice's page must never show.
        let bobs = try await curl(server.url("/exports/csv?columns=id"), method: "POST", AccessTests.bearer(AccessTests.bob))
        let foreign = try #require(bobs.json["exportId"] as? String)
        try await Self.drive(server, ["--token", AccessTests.alice, "--foreign-id", foreign])
    }
}
