import Histogram

/// Latencies in microseconds, 1 µs to an hour at three significant digits
/// (HdrHistogram). Fixed bounds, so recording never resizes and the
/// library's preconditions (which trap) are never reached: longer values
/// are clamped to the hour.
struct LatencyHistogram: Sendable {
    private static let highest: UInt64 = 3_600_000_000
    private var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: Self.highest, numberOfSignificantValueDigits: .three)

    var count: Int { Int(self.histogram.totalCount) }

    mutating func record(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let micros = seconds < 0 ? 0 : seconds >= 3600 ? Self.highest : UInt64(seconds) * 1_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000_000)
        self.histogram.record(min(max(micros, 1), Self.highest))
    }

    mutating func reset() { self.histogram.reset() }

    /// Milliseconds at a percentile (0 when empty).
    func milliseconds(at percentile: Double) -> Double {
        Double(self.histogram.valueAtPercentile(percentile)) / 1000
    }

    var maxMilliseconds: Double { Double(self.histogram.maxRecorded) / 1000 }
    var meanMilliseconds: Double { self.histogram.totalCount == 0 ? 0 : self.histogram.mean / 1000 }
}
