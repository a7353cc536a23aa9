import ArgumentParser

/// What the load test does; each has its own defaults (`Settings`).
enum Scenario: String, CaseIterable, Codable, Sendable, ExpressibleByArgument {
    /// K readers following one export as it is written, some rate-limited.
    case live
    /// Clients that create, poll, download (live, finished, gzip, ranges,
    /// resumed), cancel and delete exports with random parameters.
    case mixed
    /// Bursts of identical requests, which must share one run and its bytes.
    case coalesce
    /// `mixed` for a long time at a steady rate.
    case soak
}
