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

    static var proxyScript: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/slow_proxy.py").path
    }

    /// A gateway that reads PostgreSQL through `Scripts/slow_proxy.py` at
    /// 600 kB/s a connection, so an export of its 40,000 rows takes seconds
    /// on any machine, however loaded, and the page's bar can be watched.
    /// (Stopping the COPY backend in slices was tried first: on a loaded
    /// machine one slice let most of the export through.) The database is
    /// made and seeded by a first server, directly; `direct` is its URL, for psql.
    static func server(tokens: Bool) async throws -> (server: TestServer, direct: String, proxy: RunningProcess) {
        let seeded = try await TestServer.start(rows: 40_000)
        await seeded.stop()
        let direct = seeded.databaseURL
        guard let components = URLComponents(string: direct), let target = components.port else {
            struct BadURL: Error {}
            throw BadURL()
        }
        let proxy = try RunningProcess("python3", [Self.proxyScript, "--target", String(target), "--rate", "600000"])
        let server: TestServer
        do {
            var through = components
            through.host = "127.0.0.1"
            through.port = try await proxy.listeningPort()
            server = try await TestServer.start(databaseURL: through.string ?? direct, seed: false) { configuration in
                if tokens {
                    configuration.access.tokens = (try? APITokens.parse(list: "alice:\(AccessTests.alice), \(AccessTests.bob)", file: nil)) ?? APITokens(tokens: [])
                }
            }
        } catch {
            proxy.kill9()
            throw error
        }
        return (server, direct, proxy)
    }

    static func drive(_ server: TestServer, direct: String, _ extra: [String]) async throws {
        for tool in [Self.python, "/usr/bin/chromium", "/usr/bin/chromedriver"] {
            try #require(FileManager.default.isExecutableFile(atPath: tool), "\(tool) is missing: run the tests with scripts/test.sh, which installs it")
        }
        let selenium = try await run(Self.python, ["-c", "import selenium"])
        try #require(selenium.status == 0, "python3-selenium is missing: run the tests with scripts/test.sh, which installs it")
        try FileManager.default.createDirectory(atPath: Self.screenshots, withIntermediateDirectories: true)
        let result = try await run(
            Self.python,
            [
                Self.script, "--base", server.url(""), "--db", direct, "--psql", TestServer.psql, "--out", Self.screenshots,
            ] + extra)
        #expect(result.status == 0, "\(result.stderr.suffix(4000))\(result.text.suffix(2000))")
    }

    @Test(.timeLimit(.minutes(5)))
    func aNewUserStartsWatchesDownloadsAndCancelsExportsInChromiumOnAnOpenGateway() async throws {
        let (server, direct, proxy) = try await Self.server(tokens: false)
        // The proxy at once (SIGKILL: a child of the test process starts with
        // SIGTERM blocked); a stop in a Task could come after the process ended, and it outlived it.
        defer {
            proxy.kill9()
            Task { await server.stop() }
        }
        try await Self.drive(server, direct: direct, [])
    }

    @Test(.timeLimit(.minutes(5)))
    func withTokensThePageAsksForOneKeepsItOutOfURLsAndShowsOnlyItsExports() async throws {
        let (server, direct, proxy) = try await Self.server(tokens: true)
        defer {
            proxy.kill9()
            Task { await server.stop() }
        }
        // Bob's export, which alice's page must never show.
        let bobs = try await curl(server.url("/exports/csv?columns=id"), method: "POST", AccessTests.bearer(AccessTests.bob))
        let foreign = try #require(bobs.json["exportId"] as? String)
        try await Self.drive(server, direct: direct, ["--token", AccessTests.alice, "--foreign-id", foreign, "--other-token", AccessTests.bob])
    }
}
