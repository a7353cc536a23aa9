/// One second of the run: latencies of what finished in it, what was
/// received, and the gateway's process as sampled at its end.
struct TimelinePoint: Codable, Sendable {
    /// Seconds since the start, at the end of this second.
    let t: Double
    let latency: [String: WindowLatency]
    let requests: Int
    let bytes: Int
    let errors: Int
    let inFlight: Int
    let rssKB: Int?
    let hwmKB: Int?
    let fds: Int?
    let cpuPercent: Double?
}

/// The gateway's process over the run (`--pid`).
struct ProcessSummary: Codable, Sendable {
    let pid: Int32
    let samples: Int
    let firstRssKB: Int
    let lastRssKB: Int
    let peakRssKB: Int
    /// VmHWM at the end: the peak since the process started, which may be before this run.
    let hwmKB: Int
    let firstFds: Int
    let maxFds: Int
    let lastFds: Int
    /// utime + stime spent during the run.
    let cpuSeconds: Double
}
