import Foundation
import Synchronization

/// Everything the run measures, shared by all tasks: latencies (the whole
/// run, and the current second for the timeline), errors by kind with the
/// first messages, counters, requests and bytes. One lock; every call is a
/// few additions, and bytes are added once per received chunk.
final class Recorder: Sendable {
    /// Error messages printed as they happen; past this only the counts go on.
    static let printedErrors = 100
    /// Error messages kept for result.json and the report.
    static let keptErrors = 200

    let start: ContinuousClock.Instant

    private struct State {
        var total: [Operation: LatencyHistogram] = [:]
        var window: [Operation: LatencyHistogram] = [:]
        var errors: [ErrorKind: Int] = [:]
        var errorCount = 0
        var windowErrors = 0
        var samples: [ErrorSample] = []
        var counters: [Counter: Int] = [:]
        var requests = 0
        var windowRequests = 0
        var bytes = 0
        var windowBytes = 0
        var inFlight = 0
        var interrupted = false
    }

    private let state = Mutex(State())

    init(start: ContinuousClock.Instant = .now) {
        self.start = start
    }

    var elapsedSeconds: Double {
        let (s, atto) = (ContinuousClock.now - self.start).components
        return Double(s) + Double(atto) / 1e18
    }

    func record(_ operation: Operation, _ duration: Duration) {
        self.state.withLock { state in
            state.total[operation, default: LatencyHistogram()].record(duration)
            state.window[operation, default: LatencyHistogram()].record(duration)
        }
    }

    /// One HTTP request answered (whatever the status).
    func requestAnswered() {
        self.state.withLock { state in
            state.requests += 1
            state.windowRequests += 1
        }
    }

    func received(_ bytes: Int) {
        self.state.withLock { state in
            state.bytes += bytes
            state.windowBytes += bytes
        }
    }

    func count(_ counter: Counter, by amount: Int = 1) {
        self.state.withLock { $0.counters[counter, default: 0] += amount }
    }

    func error(_ kind: ErrorKind, _ message: String) {
        let at = self.elapsedSeconds
        let shouldPrint = self.state.withLock { state in
            state.errors[kind, default: 0] += 1
            state.errorCount += 1
            state.windowErrors += 1
            if state.samples.count < Self.keptErrors { state.samples.append(ErrorSample(kind: kind, message: message, atSeconds: (at * 1000).rounded() / 1000)) }
            return state.errorCount <= Self.printedErrors
        }
        if shouldPrint { Console.line("[\(Format.seconds(at))] ERROR \(kind.rawValue): \(message)") }
    }

    var errorCount: Int { self.state.withLock { $0.errorCount } }

    /// Ctrl-C ended the run: work it cuts is counted, not an error.
    func interrupt() { self.state.withLock { $0.interrupted = true } }

    /// Work that was still running when the run ended: a `timeout` at the
    /// time limit, merely counted after Ctrl-C.
    func cutShort(_ message: String) {
        let interrupted = self.state.withLock { state in
            if state.interrupted { state.counters[.interrupted, default: 0] += 1 }
            return state.interrupted
        }
        if !interrupted { self.error(.timeout, message) }
    }

    /// Takes a place for a session unless `limit` are running.
    func enter(limit: Int) -> Bool {
        self.state.withLock { state in
            guard state.inFlight < limit else { return false }
            state.inFlight += 1
            return true
        }
    }

    func leave() { self.state.withLock { $0.inFlight -= 1 } }

    /// The second that just ended, for the timeline and the progress line; starts the next.
    func takeWindow() -> Window {
        self.state.withLock { state in
            var latencies: [Operation: WindowLatency] = [:]
            for (operation, histogram) in state.window where histogram.count > 0 {
                latencies[operation] = WindowLatency(count: histogram.count, p50Ms: histogram.milliseconds(at: 50), p99Ms: histogram.milliseconds(at: 99))
            }
            for operation in Array(state.window.keys) { state.window[operation]?.reset() }
            let window = Window(latencies: latencies, requests: state.windowRequests, bytes: state.windowBytes, errors: state.windowErrors, inFlight: state.inFlight, totalErrors: state.errorCount)
            state.windowRequests = 0
            state.windowBytes = 0
            state.windowErrors = 0
            return window
        }
    }

    struct Window: Sendable {
        let latencies: [Operation: WindowLatency]
        let requests: Int
        let bytes: Int
        let errors: Int
        let inFlight: Int
        let totalErrors: Int
    }

    struct Totals: Sendable {
        let operations: [Operation: OperationSummary]
        let errors: [ErrorKind: Int]
        let samples: [ErrorSample]
        let counters: [Counter: Int]
        let requests: Int
        let bytes: Int
    }

    func totals() -> Totals {
        self.state.withLock { state in
            var operations: [Operation: OperationSummary] = [:]
            for (operation, h) in state.total where h.count > 0 {
                operations[operation] = OperationSummary(
                    count: h.count, p50Ms: h.milliseconds(at: 50), p90Ms: h.milliseconds(at: 90), p99Ms: h.milliseconds(at: 99),
                    maxMs: h.maxMilliseconds, meanMs: (h.meanMilliseconds * 1000).rounded() / 1000)
            }
            return Totals(operations: operations, errors: state.errors, samples: state.samples, counters: state.counters, requests: state.requests, bytes: state.bytes)
        }
    }
}

struct ErrorSample: Codable, Sendable {
    let kind: ErrorKind
    let message: String
    let atSeconds: Double
}

struct WindowLatency: Codable, Sendable {
    let count: Int
    let p50Ms: Double
    let p99Ms: Double
}

struct OperationSummary: Codable, Sendable {
    let count: Int
    let p50Ms: Double
    let p90Ms: Double
    let p99Ms: Double
    let maxMs: Double
    let meanMs: Double
}
