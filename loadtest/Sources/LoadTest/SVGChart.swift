import Foundation

/// A line chart as inline SVG: no script, no fonts or files from anywhere,
/// so report.html opens offline and as a single file.
struct SVGChart {
    struct Series {
        let name: String
        let color: String
        /// (seconds, value); consecutive points more than 1.5 s apart are not joined.
        let points: [(x: Double, y: Double)]
        var dashed = false
    }

    let title: String
    let unit: String
    let series: [Series]
    let xMax: Double

    private let width = 760.0
    private let height = 240.0
    private let left = 64.0
    private let right = 16.0
    private let top = 30.0
    private let bottom = 34.0

    func render() -> String {
        let plotW = self.width - self.left - self.right
        let plotH = self.height - self.top - self.bottom
        // Four gridline steps of a round size, so every label is a round number.
        let yStep = Self.niceCeiling((self.series.flatMap { $0.points.map(\.y) }.max() ?? 0) / 4)
        let yTop = yStep * 4
        let xTop = max(1, self.xMax)
        func px(_ x: Double) -> Double { self.left + x / xTop * plotW }
        func py(_ y: Double) -> Double { self.top + plotH - y / yTop * plotH }

        var svg =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(self.width)) \(Int(self.height))\" width=\"\(Int(self.width))\" height=\"\(Int(self.height))\" role=\"img\" aria-label=\"\(HTML.escape(self.title))\">"
        svg += "<rect x=\"0\" y=\"0\" width=\"\(Int(self.width))\" height=\"\(Int(self.height))\" fill=\"#fff\"/>"
        svg += "<text x=\"\(Int(self.left))\" y=\"18\" font-size=\"13\" font-weight=\"bold\">\(HTML.escape(self.title)) (\(HTML.escape(self.unit)))</text>"
        for i in 0...4 {
            let value = yTop * Double(i) / 4
            let y = py(value)
            svg += "<line x1=\"\(Self.n(self.left))\" y1=\"\(Self.n(y))\" x2=\"\(Self.n(self.width - self.right))\" y2=\"\(Self.n(y))\" stroke=\"#ddd\"/>"
            svg += "<text x=\"\(Self.n(self.left - 6))\" y=\"\(Self.n(y + 4))\" font-size=\"11\" text-anchor=\"end\">\(Self.label(value, step: yStep))</text>"
        }
        let xStep = Self.niceCeiling(xTop / 8)
        var tick = 0.0
        while tick <= xTop + 1e-9 {
            let x = px(tick)
            svg += "<line x1=\"\(Self.n(x))\" y1=\"\(Self.n(self.top + plotH))\" x2=\"\(Self.n(x))\" y2=\"\(Self.n(self.top + plotH + 4))\" stroke=\"#888\"/>"
            svg += "<text x=\"\(Self.n(x))\" y=\"\(Self.n(self.top + plotH + 16))\" font-size=\"11\" text-anchor=\"middle\">\(Self.label(tick, step: xStep))</text>"
            tick += xStep
        }
        svg += "<text x=\"\(Self.n(self.left + plotW / 2))\" y=\"\(Self.n(self.height - 3))\" font-size=\"11\" text-anchor=\"middle\">seconds</text>"
        svg += "<rect x=\"\(Self.n(self.left))\" y=\"\(Self.n(self.top))\" width=\"\(Self.n(plotW))\" height=\"\(Self.n(plotH))\" fill=\"none\" stroke=\"#888\"/>"
        for series in self.series {
            let dash = series.dashed ? " stroke-dasharray=\"5 3\"" : ""
            for run in Self.runs(series.points) {
                if run.count == 1, let p = run.first {
                    svg += "<circle cx=\"\(Self.n(px(p.x)))\" cy=\"\(Self.n(py(p.y)))\" r=\"2.5\" fill=\"\(series.color)\"/>"
                } else {
                    let points = run.map { "\(Self.n(px($0.x))),\(Self.n(py($0.y)))" }.joined(separator: " ")
                    svg += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"1.6\"\(dash)/>"
                }
            }
        }
        var legendX = self.width - self.right
        for series in self.series.reversed() {
            legendX -= Double(series.name.count) * 7.5 + 34
            let dash = series.dashed ? " stroke-dasharray=\"5 3\"" : ""
            svg += "<line x1=\"\(Self.n(legendX))\" y1=\"12\" x2=\"\(Self.n(legendX + 20))\" y2=\"12\" stroke=\"\(series.color)\" stroke-width=\"2\"\(dash)/>"
            svg += "<text x=\"\(Self.n(legendX + 24))\" y=\"16\" font-size=\"11\">\(HTML.escape(series.name))</text>"
        }
        if self.series.allSatisfy({ $0.points.isEmpty }) {
            svg += "<text x=\"\(Self.n(self.left + plotW / 2))\" y=\"\(Self.n(self.top + plotH / 2))\" font-size=\"12\" text-anchor=\"middle\" fill=\"#888\">no data</text>"
        }
        return svg + "</svg>"
    }

    /// Runs of points with no gap longer than 1.5 s.
    private static func runs(_ points: [(x: Double, y: Double)]) -> [[(x: Double, y: Double)]] {
        var runs: [[(x: Double, y: Double)]] = []
        for point in points {
            if let last = runs.last?.last, point.x - last.x <= 1.5 {
                runs[runs.count - 1].append(point)
            } else {
                runs.append([point])
            }
        }
        return runs
    }

    /// 1, 2 or 5 times a power of ten, at or above `value` (1 for nothing).
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0, value.isFinite else { return 1 }
        let power = pow(10, floor(log10(value)))
        let fraction = value / power
        let nice: Double = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10
        return nice * power
    }

    private static func label(_ value: Double, step: Double) -> String {
        let digits = step >= 1 ? 0 : min(4, Int(ceil(-log10(step))))
        return String(format: "%.\(digits)f", value)
    }

    private static func n(_ value: Double) -> String { String(format: "%.1f", value) }
}

enum HTML {
    static func escape(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
