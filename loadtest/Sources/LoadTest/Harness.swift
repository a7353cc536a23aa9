import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// One run: the client, the shared state, the scenario, the ticker, the
/// time limit; then the result.
struct Harness: Sendable {
    let settings: Settings

    func run() async -> RunResult {
        let settings = self.settings
        let startedAt = Date()
        let recorder = Recorder()
        let http = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: self.clientConfiguration())
        let filesDirectory = NSTemporaryDirectory() + "loadtest-files-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: filesDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let files = FinishedFiles(directory: filesDirectory, capacity: settings.fileCacheBytes)
        let client = GatewayClient(http: http, settings: settings, recorder: recorder, deadline: .now() + .nanoseconds(Int64(settings.hardLimit * 1e9)))
        let context = Context(client: client, check: DownloadCheck(recorder: recorder), files: files, known: KnownDigests(), parameters: ExportParameters(base: settings.query))
        let ticker = Ticker(recorder: recorder, sampler: settings.pid.map(ProcessSampler.init(pid:)))
        if let pid = settings.pid, ProcessSampler(pid: pid).sample() == nil { Console.line("warning: no process \(pid) to sample (/proc/\(pid))") }
        Console.line("loadtest \(settings.scenario.rawValue) → \(settings.base): \(self.plan), seed \(settings.seed), time limit \(Format.fixed(settings.hardLimit, 0)) s")

        let output = await withTaskGroup(of: Ticker.Output?.self) { group in
            group.addTask { await ticker.run() }
            // The scenario ends by itself, at the time limit, or at Ctrl-C; whichever comes first cancels the others.
            await withTaskGroup(of: Bool.self) { work in
                work.addTask {
                    await Self.scenario(settings.scenario, context)
                    return false
                }
                work.addTask {
                    try? await Task.sleep(for: .seconds(settings.hardLimit))
                    return false
                }
                work.addTask {
                    await Interrupt.wait()
                    return !Task.isCancelled
                }
                if await work.next() == true { recorder.interrupt() }
                work.cancelAll()
            }
            group.cancelAll()
            for await output in group {
                if let output { return output }
            }
            return Ticker.Output()
        }
        await files.removeAll()
        try? await http.shutdown()

        let totals = recorder.totals()
        let duration = recorder.elapsedSeconds
        let errorCount = totals.errors.values.reduce(0, +)
        return RunResult(
            settings: settings,
            startedAt: ISO8601DateFormatter().string(from: startedAt),
            durationSeconds: (duration * 1000).rounded() / 1000,
            ok: errorCount == 0,
            errorCount: errorCount,
            errors: Dictionary(uniqueKeysWithValues: totals.errors.map { ($0.key.rawValue, $0.value) }),
            errorSamples: totals.samples,
            operations: Dictionary(uniqueKeysWithValues: totals.operations.map { ($0.key.rawValue, $0.value) }),
            throughput: .init(
                bytes: totals.bytes, bytesPerSecond: duration > 0 ? (Double(totals.bytes) / duration).rounded() : 0,
                requests: totals.requests, requestsPerSecond: duration > 0 ? (Double(totals.requests) / duration * 10).rounded() / 10 : 0),
            counters: Dictionary(uniqueKeysWithValues: totals.counters.map { ($0.key.rawValue, $0.value) }),
            process: output.process,
            timeline: output.timeline
        )
    }

    private static func scenario(_ scenario: Scenario, _ context: Context) async {
        switch scenario {
        case .live: await LiveScenario(context: context).run()
        case .mixed, .soak: await MixedScenario(context: context).run()
        case .coalesce: await CoalesceScenario(context: context).run()
        }
    }

    private var plan: String {
        let s = self.settings
        switch s.scenario {
        case .live: return "\(s.readers) readers (\(s.slow) slow) at \(s.rate)/s"
        case .mixed, .soak: return "sessions at \(s.rate)/s for \(s.duration) s\(s.count.map { ", at most \($0)" } ?? "")"
        case .coalesce: return "bursts of \(s.count ?? 20) at \(s.rate)/s for \(s.duration) s\(s.rounds.map { ", at most \($0)" } ?? "")"
        }
    }

    private func clientConfiguration() -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration()
        configuration.httpVersion = .http1Only
        // Bodies are judged as sent: gzip is inflated by the load test itself.
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(10), read: .milliseconds(Int64(self.settings.readTimeout * 1000)))
        // Every session may hold a few connections at once (a live download
        // beside status polls); the default of 8 a host would queue them and
        // turn the open loop into a closed one.
        let connections = max(64, self.settings.maxInFlight * 3, self.settings.readers + 16, (self.settings.count ?? 0) * 2 + 16)
        // Idle connections are dropped before the gateway's KEEP_ALIVE_TIMEOUT
        // (15 s) closes them, so a request never races the server's close.
        configuration.connectionPool = .init(idleTimeout: .seconds(10), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        // A refused connection is an answer to report, not one to retry until the deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }
}
