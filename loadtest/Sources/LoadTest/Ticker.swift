/// Once a second: takes the recorder's window, samples the gateway's
/// process, prints the progress line and keeps the timeline. Runs until
/// cancelled, then adds the last partial second and returns what it kept.
struct Ticker: Sendable {
    let recorder: Recorder
    let sampler: ProcessSampler?

    struct Output: Sendable {
        var timeline: [TimelinePoint] = []
        var process: ProcessSummary?
    }

    func run() async -> Output {
        var output = Output()
        var first: ProcessSampler.Sample?
        var previous: ProcessSampler.Sample?
        var peakRss = 0
        var maxFds = 0
        var second = 1
        var lastTick = self.recorder.start
        while true {
            let due = self.recorder.start + .seconds(second)
            let cancelled = (try? await ContinuousClock().sleep(until: due)) == nil
            let now = ContinuousClock.now
            let window = self.recorder.takeWindow()
            let sample = self.sampler?.sample()
            if let sample {
                if first == nil { first = sample }
                peakRss = max(peakRss, sample.rssKB)
                maxFds = max(maxFds, sample.descriptors)
            }
            let span = Self.seconds(now - lastTick)
            let cpu: Double? = sample.flatMap { s in previous.map { p in span > 0 ? ((s.cpuSeconds - p.cpuSeconds) / span * 1000).rounded() / 10 : 0 } }
            let t = (self.recorder.elapsedSeconds * 1000).rounded() / 1000
            output.timeline.append(
                TimelinePoint(
                    t: t, latency: Dictionary(uniqueKeysWithValues: window.latencies.map { ($0.key.rawValue, $0.value) }),
                    requests: window.requests, bytes: window.bytes, errors: window.errors, inFlight: window.inFlight,
                    rssKB: sample?.rssKB, hwmKB: sample?.hwmKB, fds: sample?.descriptors, cpuPercent: cpu))
            Console.line(Self.progressLine(t: t, span: span, window: window, sample: sample, cpu: cpu))
            if let sample { previous = sample }
            lastTick = now
            second += 1
            if cancelled || Task.isCancelled { break }
        }
        if let pid = self.sampler?.pid, let first, let last = previous {
            output.process = ProcessSummary(
                pid: pid, samples: output.timeline.filter { $0.rssKB != nil }.count, firstRssKB: first.rssKB, lastRssKB: last.rssKB,
                peakRssKB: peakRss, hwmKB: last.hwmKB, firstFds: first.descriptors, maxFds: maxFds, lastFds: last.descriptors,
                cpuSeconds: ((last.cpuSeconds - first.cpuSeconds) * 100).rounded() / 100)
        }
        return output
    }

    private static func seconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) + Double(atto) / 1e18
    }

    private static func progressLine(t: Double, span: Double, window: Recorder.Window, sample: ProcessSampler.Sample?, cpu: Double?) -> String {
        let perSecond = span > 0 ? 1 / span : 0
        var line = "[\(Format.seconds(t))] \(Format.fixed(Double(window.requests) * perSecond, 0)) req/s  \(Format.bytes(Double(window.bytes) * perSecond))/s"
        line += "  in flight \(window.inFlight)  errors \(window.totalErrors)"
        if let p99 = window.latencies[.firstByte]?.p99Ms { line += "  first byte p99 \(Format.fixed(p99, 1)) ms" }
        if let sample {
            line += "  rss \(Format.mebibytes(kilobytes: sample.rssKB))  fds \(sample.descriptors)"
            if let cpu { line += "  cpu \(Format.fixed(cpu, 0))%" }
        }
        return line
    }
}
