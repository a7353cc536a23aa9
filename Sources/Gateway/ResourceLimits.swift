#if canImport(Glibc)
import Glibc
#endif

/// The process's own limits and signal dispositions, set where the defaults
/// do not suit a server.
enum ResourceLimits {
    /// Signals whose default action ends the process, and which nothing here
    /// uses: ignored, so that no stray `kill -HUP` (a closed terminal, a
    /// process manager's reload) stops the gateway. SIGTERM and SIGINT start
    /// the graceful shutdown (`GatewayMain`); SIGXFSZ ignored turns a write
    /// past the file size limit into EFBIG, which fails one export cleanly.
    static func ignoreStraySignals() {
        for signal in [SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGXFSZ, SIGPIPE] {
            _ = Glibc.signal(signal, SIG_IGN)
        }
    }

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
