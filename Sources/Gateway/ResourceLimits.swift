#if canImport(Glibc)
import Glibc
#endif

/// The process's own limits, raised where the defaults are too low for a server.
enum ResourceLimits {
    /// Raises the soft limit on open files to the hard limit: every download
    /// of a finished file holds two descriptors (its socket and its file), so
    /// MAX_CONNECTIONS downloads need more than a shell's usual 1024.
    static func raiseOpenFiles() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
