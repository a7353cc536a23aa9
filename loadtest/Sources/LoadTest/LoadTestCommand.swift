import ArgumentParser
import Foundation

/// `loadtest <scenario> --base URL …`: drives a gateway with an open-loop
/// mix, verifies every byte it receives, and writes result.json and
/// report.html. Exits 0 only when nothing went wrong.
@main
struct LoadTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadtest",
        abstract: "Load test and byte-for-byte verifier for the CSV export gateway.",
        discussion: """
            Scenarios: live (K readers on one export), mixed (random creates, polls, live/finished/gzip/range/resumed \
            downloads, cancels, deletes), coalesce (bursts of identical requests), soak (mixed, long and steady).
            Exit status 0 only when no error was seen; errors are counted by kind in result.json.
            """
    )

    @Argument(help: "live, mixed, coalesce or soak")
    var scenario: Scenario

    @Option(help: "The gateway's base URL, e.g. http://127.0.0.1:8080")
    var base: String

    @Option(help: "Seconds of arrivals (live: the time limit). Defaults: live 300, mixed 30, coalesce 10, soak 600")
    var duration: Double?

    @Option(help: "Arrivals: sessions (mixed, soak), readers (live), bursts (coalesce) a second: 5, 5/s, 120/m")
    var rate: ArrivalRate?

    @Option(help: "mixed/soak: at most this many sessions; coalesce: identical requests a burst (default 20)")
    var count: Int?

    @Option(help: "coalesce: at most this many bursts")
    var rounds: Int?

    @Option(help: "live: readers of the export")
    var readers: Int = 12

    @Option(help: "live: how many of the readers are rate-limited")
    var slow: Int = 4

    @Option(help: "live: bytes a second of each slow reader (k, m, g are powers of 1024)")
    var slowRate: ByteCount = ByteCount(bytes: 30 << 20)

    @Option(help: "Query parameters added to every export created, e.g. 'min_ltv=9900&country_code=US'")
    var query: String = ""

    @Option(help: "The gateway's process id: sample its memory, descriptors and CPU every second")
    var pid: Int32?

    @Option(help: "API token, sent as Authorization: Bearer on every /exports request (or LOADTEST_TOKEN in the environment, which ps does not show)")
    var token: String?

    @Option(help: "Folder for result.json and report.html")
    var out: String = "loadtest-out"

    @Option(help: "Seed of the random choices (default: random, written to result.json)")
    var seed: UInt64?

    @Option(help: "Seconds after the arrivals for work in flight to finish")
    var drain: Double = 60

    @Option(help: "Sessions in flight at most; an arrival beyond is dropped and counted")
    var maxInFlight: Int = 256

    @Option(help: "Bytes of finished files kept on disk for range checks")
    var fileCache: ByteCount = ByteCount(bytes: 1 << 30)

    @Option(help: "Seconds a response may go without a byte before it counts as a timeout")
    var readTimeout: Double = 120

    @Flag(inversion: .prefixedNo, help: "live: ask for a new run (Cache-Control: no-cache)")
    var fresh: Bool = true

    func validate() throws {
        guard let url = URL(string: self.base), url.scheme == "http" || url.scheme == "https", url.host != nil else {
            throw ValidationError("--base must be an http(s) URL such as http://127.0.0.1:8080")
        }
        // Bounds keep every later conversion (durations, deadlines, pool sizes) far from overflow.
        let year = 366.0 * 86400
        if let duration, !(duration > 0 && duration <= year) { throw ValidationError("--duration must be positive, at most a year") }
        if !(1...100_000).contains(self.readers) || self.slow < 0 || self.slow > self.readers { throw ValidationError("--readers must be 1 to 100000 and --slow between 0 and --readers") }
        if !(1...100_000).contains(self.maxInFlight) { throw ValidationError("--max-in-flight must be 1 to 100000") }
        if let count, !(1...1_000_000).contains(count) { throw ValidationError("--count must be 1 to 1000000") }
        if let rounds, rounds < 1 { throw ValidationError("--rounds must be at least 1") }
        if self.slowRate.bytes < 1 { throw ValidationError("--slow-rate must be at least 1 byte a second") }
        if !(self.readTimeout > 0 && self.readTimeout <= year) || !(self.drain >= 0 && self.drain <= year) {
            throw ValidationError("--read-timeout must be positive and --drain not negative, at most a year")
        }
    }

    func run() async throws {
        let settings = self.settings()
        let result = await Harness(settings: settings).run()
        let written = ResultWriter(directory: settings.out).write(result)
        Console.line(result.summaryText + (written.map { "\nwrote \($0)" } ?? ""))
        if !result.ok || written == nil { throw ExitCode(1) }
    }

    private func settings() -> Settings {
        let defaults: (duration: Double, rate: Double) =
            switch self.scenario {
            case .live: (300, 100)
            case .mixed: (30, 5)
            case .coalesce: (10, 0.5)
            case .soak: (600, 2)
            }
        var base = self.base
        while base.hasSuffix("/") { base.removeLast() }
        return Settings(
            scenario: self.scenario, base: base, duration: self.duration ?? defaults.duration, drain: self.drain,
            rate: self.rate?.perSecond ?? defaults.rate,
            count: self.count ?? (self.scenario == .coalesce ? 20 : nil), rounds: self.rounds,
            readers: self.readers, slow: self.slow, slowRate: self.slowRate.bytes,
            query: self.query.hasPrefix("?") ? String(self.query.dropFirst()) : self.query,
            pid: self.pid, token: self.token ?? ProcessInfo.processInfo.environment["LOADTEST_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }, out: self.out,
            seed: self.seed ?? UInt64.random(in: 1...UInt64.max),
            maxInFlight: self.maxInFlight, fileCacheBytes: self.fileCache.bytes, readTimeout: self.readTimeout, fresh: self.fresh
        )
    }
}
