import Foundation

/// The command line resolved against the scenario's defaults: what a run
/// does, written into result.json (without the token) so a result says how
/// it was made.
struct Settings: Sendable, Encodable {
    var scenario: Scenario
    /// The gateway's base URL, without a trailing slash.
    var base: String
    /// Seconds of arrivals (`live`: the time limit of the whole run).
    var duration: Double
    /// Seconds after the arrivals for work in flight to finish; what is still
    /// running then is cut and counted as `timeout`.
    var drain: Double
    /// Arrivals per second: sessions (`mixed`, `soak`), readers (`live`), bursts (`coalesce`).
    var rate: Double
    /// `mixed`/`soak`: at most this many sessions; `coalesce`: identical requests a burst.
    var count: Int?
    /// `coalesce`: at most this many bursts.
    var rounds: Int?
    var readers: Int
    var slow: Int
    /// Bytes per second of each slow reader.
    var slowRate: Int
    /// Query parameters added to every export the harness creates (e.g.
    /// `min_ltv=9900` to keep exports small on a big database).
    var query: String
    var pid: Int32?
    var token: String?
    var out: String
    var seed: UInt64
    var maxInFlight: Int
    /// Bytes of finished files kept on disk for range checks.
    var fileCacheBytes: Int
    /// Seconds a response may go without a byte before it counts as cut.
    var readTimeout: Double
    /// `live`: ask for a new run (`Cache-Control: no-cache`), so readers follow it live.
    var fresh: Bool

    private enum CodingKeys: String, CodingKey {
        case scenario, base, duration, drain, rate, count, rounds, readers, slow, slowRate, query, pid, out, seed,
            maxInFlight, fileCacheBytes, readTimeout, fresh, authenticated
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.scenario, forKey: .scenario)
        try c.encode(self.base, forKey: .base)
        try c.encode(self.duration, forKey: .duration)
        try c.encode(self.drain, forKey: .drain)
        try c.encode(self.rate, forKey: .rate)
        try c.encode(self.count, forKey: .count)
        try c.encode(self.rounds, forKey: .rounds)
        try c.encode(self.readers, forKey: .readers)
        try c.encode(self.slow, forKey: .slow)
        try c.encode(self.slowRate, forKey: .slowRate)
        try c.encode(self.query, forKey: .query)
        try c.encode(self.pid, forKey: .pid)
        try c.encode(self.out, forKey: .out)
        try c.encode(self.seed, forKey: .seed)
        try c.encode(self.maxInFlight, forKey: .maxInFlight)
        try c.encode(self.fileCacheBytes, forKey: .fileCacheBytes)
        try c.encode(self.readTimeout, forKey: .readTimeout)
        try c.encode(self.fresh, forKey: .fresh)
        // The token itself never goes into a file.
        try c.encode(self.token != nil, forKey: .authenticated)
    }

    /// Seconds from the start after which everything still running is cut.
    var hardLimit: Double {
        self.scenario == .live ? self.duration : self.duration + self.drain
    }
}
