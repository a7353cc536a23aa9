import Foundation

/// report.html: one self-contained page (inline CSS and SVG, no script, no
/// network) with the run's verdict, tables of latencies, errors and counters,
/// and plots over time of latency per operation, throughput and the
/// gateway's memory, descriptors and CPU.
struct HTMLReport {
    let result: RunResult

    private static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    func render() -> String {
        let r = self.result
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>loadtest \(HTML.escape(r.settings.scenario.rawValue)) — \(r.ok ? "OK" : "FAILED")</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:820px}
            table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
            th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
            .ok{color:#fff;background:#2a7d2a;padding:4px 10px}.failed{color:#fff;background:#b22;padding:4px 10px}
            code,pre{font-size:12px}pre{white-space:pre-wrap;background:#f7f7f7;padding:8px}
            svg{display:block;margin:6px 0 14px;border:1px solid #eee}
            </style></head><body>
            <h1>loadtest: \(HTML.escape(r.settings.scenario.rawValue))</h1>
            <p><span class="\(r.ok ? "ok" : "failed")">\(r.ok ? "OK — no errors" : "FAILED — \(r.errorCount) errors")</span></p>
            <p>\(HTML.escape(r.settings.base)), started \(HTML.escape(r.startedAt)), \(Format.fixed(r.durationSeconds, 1)) s, seed \(r.settings.seed).
            \(r.throughput.requests) requests (\(Format.fixed(r.throughput.requestsPerSecond, 1))/s), \(HTML.escape(Format.bytes(Double(r.throughput.bytes)))) received (\(HTML.escape(Format.bytes(r.throughput.bytesPerSecond)))/s).</p>

            """
        html += self.latencyTable() + self.errorTables() + self.countersTable() + self.processTable()
        html += "<h2>Latency over time</h2><p>Per second, of the operations that finished in it: p50 solid, p99 dashed.</p>\n"
        html += self.latencyCharts()
        html += "<h2>Throughput over time</h2>\n" + self.throughputCharts()
        if r.process != nil { html += "<h2>Gateway process over time</h2>\n" + self.processCharts() }
        html += "<h2>Settings</h2>\n" + self.settingsTable()
        return html + "</body></html>\n"
    }

    private func latencyTable() -> String {
        var rows = ""
        for operation in Operation.allCases {
            guard let s = self.result.operations[operation.rawValue] else { continue }
            rows +=
                "<tr><td>\(operation.rawValue)</td><td>\(s.count)</td><td>\(Format.fixed(s.p50Ms, 2))</td><td>\(Format.fixed(s.p90Ms, 2))</td><td>\(Format.fixed(s.p99Ms, 2))</td><td>\(Format.fixed(s.maxMs, 2))</td><td>\(Format.fixed(s.meanMs, 2))</td></tr>\n"
        }
        return "<h2>Latency (ms)</h2>\n<table><tr><th>operation</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>mean</th></tr>\n\(rows)</table>\n"
    }

    private func errorTables() -> String {
        let r = self.result
        guard !r.errors.isEmpty else { return "<h2>Errors</h2>\n<p>None.</p>\n" }
        var html = "<h2>Errors</h2>\n<table><tr><th>kind</th><th>count</th></tr>\n"
        for (kind, count) in r.errors.sorted(by: { $0.key < $1.key }) { html += "<tr><td>\(HTML.escape(kind))</td><td>\(count)</td></tr>\n" }
        html += "</table>\n<p>First \(r.errorSamples.count) messages:</p>\n<pre>"
        for sample in r.errorSamples { html += HTML.escape("[\(Format.fixed(sample.atSeconds, 1)) s] \(sample.kind.rawValue): \(sample.message)") + "\n" }
        return html + "</pre>\n"
    }

    private func countersTable() -> String {
        var html = "<h2>Counters</h2>\n<table><tr><th>counter</th><th>value</th></tr>\n"
        for counter in Counter.allCases {
            guard let value = self.result.counters[counter.rawValue] else { continue }
            html += "<tr><td>\(counter.rawValue)</td><td>\(value)</td></tr>\n"
        }
        return html + "</table>\n"
    }

    private func processTable() -> String {
        guard let p = self.result.process else { return "" }
        let rows: [(String, String)] = [
            ("pid", "\(p.pid)"), ("samples", "\(p.samples)"),
            ("VmRSS first / peak / last", "\(Format.mebibytes(kilobytes: p.firstRssKB)) / \(Format.mebibytes(kilobytes: p.peakRssKB)) / \(Format.mebibytes(kilobytes: p.lastRssKB))"),
            ("VmHWM at the end", Format.mebibytes(kilobytes: p.hwmKB)),
            ("descriptors first / max / last", "\(p.firstFds) / \(p.maxFds) / \(p.lastFds)"),
            ("CPU (utime+stime) during the run", "\(Format.fixed(p.cpuSeconds, 2)) s"),
        ]
        return "<h2>Gateway process</h2>\n<table>" + rows.map { "<tr><td>\($0.0)</td><td>\(HTML.escape($0.1))</td></tr>" }.joined(separator: "\n") + "</table>\n"
    }

    private var xMax: Double { self.result.timeline.last?.t ?? self.result.durationSeconds }

    private func latencyCharts() -> String {
        var html = ""
        for (i, operation) in Operation.allCases.enumerated() {
            let points = self.result.timeline.compactMap { point in point.latency[operation.rawValue].map { (t: point.t, l: $0) } }
            guard !points.isEmpty else { continue }
            let color = Self.palette[i % Self.palette.count]
            html +=
                SVGChart(
                    title: "\(operation.rawValue) latency", unit: "ms",
                    series: [
                        .init(name: "p50", color: color, points: points.map { (x: $0.t, y: $0.l.p50Ms) }),
                        .init(name: "p99", color: color, points: points.map { (x: $0.t, y: $0.l.p99Ms) }, dashed: true),
                    ], xMax: self.xMax
                ).render() + "\n"
        }
        return html.isEmpty ? "<p>No operation finished.</p>\n" : html
    }

    private func throughputCharts() -> String {
        let timeline = self.result.timeline
        // Each point covers the time since the previous one (the last may be short).
        var previous = 0.0
        var bytes: [(x: Double, y: Double)] = []
        var requests: [(x: Double, y: Double)] = []
        var errors: [(x: Double, y: Double)] = []
        for point in timeline {
            let span = max(0.001, point.t - previous)
            previous = point.t
            bytes.append((x: point.t, y: Double(point.bytes) / span / 1e6))
            requests.append((x: point.t, y: Double(point.requests) / span))
            errors.append((x: point.t, y: Double(point.errors)))
        }
        return SVGChart(title: "received", unit: "MB/s", series: [.init(name: "MB/s", color: Self.palette[0], points: bytes)], xMax: self.xMax).render() + "\n"
            + SVGChart(
                title: "requests answered", unit: "per second",
                series: [
                    .init(name: "requests/s", color: Self.palette[2], points: requests),
                    .init(name: "errors", color: Self.palette[1], points: errors),
                ], xMax: self.xMax
            ).render() + "\n"
    }

    private func processCharts() -> String {
        let timeline = self.result.timeline
        let rss = timeline.compactMap { p in p.rssKB.map { (x: p.t, y: Double($0) / 1024) } }
        let hwm = timeline.compactMap { p in p.hwmKB.map { (x: p.t, y: Double($0) / 1024) } }
        let fds = timeline.compactMap { p in p.fds.map { (x: p.t, y: Double($0)) } }
        let cpu = timeline.compactMap { p in p.cpuPercent.map { (x: p.t, y: $0) } }
        return SVGChart(
            title: "resident memory", unit: "MiB",
            series: [
                .init(name: "VmRSS", color: Self.palette[0], points: rss),
                .init(name: "VmHWM", color: Self.palette[1], points: hwm, dashed: true),
            ], xMax: self.xMax
        ).render() + "\n"
            + SVGChart(title: "open descriptors", unit: "count", series: [.init(name: "fds", color: Self.palette[4], points: fds)], xMax: self.xMax).render() + "\n"
            + SVGChart(title: "CPU", unit: "% of one core", series: [.init(name: "cpu", color: Self.palette[3], points: cpu)], xMax: self.xMax).render() + "\n"
    }

    private func settingsTable() -> String {
        let s = self.result.settings
        let rows: [(String, String)] = [
            ("scenario", s.scenario.rawValue), ("base", s.base), ("duration", "\(s.duration) s"), ("drain", "\(s.drain) s"),
            ("rate", "\(s.rate)/s"), ("count", s.count.map(String.init) ?? "-"), ("rounds", s.rounds.map(String.init) ?? "-"),
            ("readers / slow / slow rate", "\(s.readers) / \(s.slow) / \(Format.bytes(Double(s.slowRate)))/s"), ("query", s.query.isEmpty ? "-" : s.query),
            ("pid", s.pid.map(String.init) ?? "-"), ("token", s.token == nil ? "no" : "yes (not shown)"), ("seed", "\(s.seed)"),
            ("max in flight", "\(s.maxInFlight)"), ("file cache", Format.bytes(Double(s.fileCacheBytes))), ("read timeout", "\(s.readTimeout) s"),
        ]
        return "<table>" + rows.map { "<tr><td>\($0.0)</td><td>\(HTML.escape($0.1))</td></tr>" }.joined(separator: "\n") + "</table>\n"
    }
}
