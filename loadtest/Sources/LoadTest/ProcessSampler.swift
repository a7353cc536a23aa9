import Foundation

/// The gateway's resident memory, descriptors and CPU time, read from
/// /proc/PID once a second. procfs reads are answered from kernel memory,
/// so they are done inline rather than on a thread pool.
struct ProcessSampler: Sendable {
    let pid: Int32
    private let ticksPerSecond = Double(max(1, sysconf(Int32(_SC_CLK_TCK))))

    init(pid: Int32) { self.pid = pid }

    struct Sample: Sendable {
        /// VmRSS and VmHWM in kB.
        let rssKB: Int
        let hwmKB: Int
        let descriptors: Int
        /// utime + stime, seconds.
        let cpuSeconds: Double
    }

    /// Nil once the process is gone (or was never there).
    func sample() -> Sample? {
        guard let status = Self.read("/proc/\(self.pid)/status"), let stat = Self.read("/proc/\(self.pid)/stat") else { return nil }
        var rss = 0
        var hwm = 0
        for line in status.split(separator: "\n") {
            if line.hasPrefix("VmRSS:") { rss = Self.kilobytes(line) }
            if line.hasPrefix("VmHWM:") { hwm = Self.kilobytes(line) }
        }
        // Fields after the command name (which may hold spaces and parentheses):
        // state is field 3, utime 14, stime 15 (proc(5)).
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        return Sample(rssKB: rss, hwmKB: hwm, descriptors: self.descriptors(), cpuSeconds: (utime + stime) / self.ticksPerSecond)
    }

    /// Entries of /proc/PID/fd, counted with readdir (no array of names).
    private func descriptors() -> Int {
        guard let dir = opendir("/proc/\(self.pid)/fd") else { return -1 }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in name.first == UInt8(ascii: ".") }
            if !isDot { count += 1 }
        }
        return count
    }

    private static func kilobytes(_ line: Substring) -> Int {
        line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
    }

    private static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
