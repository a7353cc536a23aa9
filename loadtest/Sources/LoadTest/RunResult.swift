/// result.json: what was asked, what was measured, what went wrong.
struct RunResult: Encodable, Sendable {
    struct Throughput: Encodable, Sendable {
        let bytes: Int
        let bytesPerSecond: Double
        let requests: Int
        let requestsPerSecond: Double
    }

    let settings: Settings
    /// RFC 3339, UTC.
    let startedAt: String
    let durationSeconds: Double
    /// True only when no error of any kind was seen (the exit status is 0 then).
    let ok: Bool
    let errorCount: Int
    let errors: [String: Int]
    /// The first error messages, in order.
    let errorSamples: [ErrorSample]
    /// Latencies by operation, milliseconds.
    let operations: [String: OperationSummary]
    let throughput: Throughput
    let counters: [String: Int]
    let process: ProcessSummary?
    let timeline: [TimelinePoint]

    /// The end-of-run summary for the terminal.
    var summaryText: String {
        var lines = [
            "\(self.settings.scenario.rawValue): \(Format.fixed(self.durationSeconds, 1)) s, \(self.throughput.requests) requests (\(Format.fixed(self.throughput.requestsPerSecond, 1))/s), \(Format.bytes(Double(self.throughput.bytes))) (\(Format.bytes(self.throughput.bytesPerSecond))/s)"
        ]
        for operation in Operation.allCases {
            guard let s = self.operations[operation.rawValue] else { continue }
            lines.append(
                "  \(operation.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)) n=\(s.count)  p50 \(Format.fixed(s.p50Ms, 2)) ms  p90 \(Format.fixed(s.p90Ms, 2))  p99 \(Format.fixed(s.p99Ms, 2))  max \(Format.fixed(s.maxMs, 2))"
            )
        }
        lines.append("  " + self.counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        if let p = self.process {
            lines.append(
                "  gateway \(p.pid): rss \(Format.mebibytes(kilobytes: p.firstRssKB)) → peak \(Format.mebibytes(kilobytes: p.peakRssKB)) → \(Format.mebibytes(kilobytes: p.lastRssKB)), VmHWM \(Format.mebibytes(kilobytes: p.hwmKB)), fds \(p.firstFds) → max \(p.maxFds) → \(p.lastFds), cpu \(Format.fixed(p.cpuSeconds, 2)) s"
            )
        }
        if self.ok {
            lines.append("OK: no errors")
        } else {
            lines.append("FAILED: \(self.errorCount) errors: " + self.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}
