import Foundation
import Synchronization

/// Runs real programs (curl, psql, the gateway) for the tests, without
/// blocking the cooperative pool: the exit is awaited on a thread of its own,
/// and output goes to files, so large outputs never stall on a pipe.
struct ProcessResult: Sendable {
    let status: Int32
    let stdout: Data
    let stderr: String
    var text: String { String(decoding: self.stdout, as: UTF8.self) }
}

/// A child process started with `posix_spawn`. Not Foundation's `Process`:
/// on Linux with Swift 6.3.1 its `run()` crashes now and then, reading past
/// a `dirent` while it lists `/proc/self/fd` (swift-corelibs-foundation
/// PR #5472); seen here as "Bad pointer dereference" in a test that started
/// a few hundred curls.
final class RunningProcess: Sendable {
    let pid: pid_t
    private let outPath: String
    private let errPath: String
    private let exit: Task<Int32, Never>

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let id = UUID().uuidString
        self.outPath = NSTemporaryDirectory() + "proc-\(id).out"
        self.errPath = NSTemporaryDirectory() + "proc-\(id).err"
        let path = Self.resolve(executable)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, self.outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, self.errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // Nothing of the test process (its sockets, the servers' files) leaks into the child.
        Self.closeFrom?(&actions, 3)
        let merged = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0)=\($1)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // Signals as a shell would give them: default dispositions and none
        // blocked. The test process ignores SIGINT and SIGTERM (the
        // in-process gateways' signal handling sets them to SIG_IGN), and an
        // ignored disposition survives exec: a script started with SIGINT
        // ignored cannot even trap it (seen: run.sh deaf to Ctrl-C here).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        var none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var spawned: pid_t = 0
        let status = posix_spawn(&spawned, path, &actions, &attributes, argv, envp)
        guard status == 0 else {
            struct SpawnFailed: Error {
                let path: String
                let errno: Int32
            }
            throw SpawnFailed(path: path, errno: status)
        }
        let pid = spawned
        self.pid = pid
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        // waitpid blocks: a thread of its own, not the cooperative pool.
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
            // WIFEXITED ? WEXITSTATUS : 128 + the signal, as a shell reports it.
            let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            continuation.yield(code)
            continuation.finish()
        }
        self.exit = Task {
            for await status in stream { return status }
            return -1
        }
    }

    /// True until the process has exited.
    var isRunning: Bool { kill(self.pid, 0) == 0 && !self.hasExited }

    private var hasExited: Bool {
        // A zombie (exited, not yet reaped) still answers kill(0); /proc says which.
        guard let stat = try? String(contentsOfFile: "/proc/\(self.pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }

    func wait() async -> ProcessResult {
        let status = await self.exit.value
        let out = (try? Data(contentsOf: URL(fileURLWithPath: self.outPath))) ?? Data()
        let err = (try? String(contentsOfFile: self.errPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: self.outPath)
        try? FileManager.default.removeItem(atPath: self.errPath)
        return ProcessResult(status: status, stdout: out, stderr: err)
    }

    /// SIGTERM.
    func terminate() { if self.isRunning { kill(self.pid, SIGTERM) } }

    /// SIGINT, as Ctrl-C sends.
    func interrupt() { if self.isRunning { kill(self.pid, SIGINT) } }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    func kill9() { if self.isRunning { kill(self.pid, SIGKILL) } }

    /// What it has written to stderr so far.
    var stderrSoFar: String { (try? String(contentsOfFile: self.errPath, encoding: .utf8)) ?? "" }

    /// The port of a test proxy (`Scripts/*_proxy.py`) or of the gateway
    /// binary, from the "… listening on 127.0.0.1:PORT" line it writes to stderr.
    func listeningPort(_ what: String = "the proxy listens", timeout: Duration = .seconds(30)) async throws -> Int {
        var port = 0
        try await eventually(timeout: timeout, what) {
            guard let line = self.stderrSoFar.split(separator: "\n").first(where: { $0.contains("listening on") }),
                let last = line.split(separator: ":").last, let p = Int(last.trimmingCharacters(in: .whitespaces))
            else { return false }
            port = p
            return true
        }
        return port
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later),
    /// which Swift's Glibc module does not show.
    private static let closeFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    private static func resolve(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "/usr/bin/\(name)"
    }
}

func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> ProcessResult {
    try await RunningProcess(executable, arguments, environment: environment).wait()
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(20), _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(25))
    }
    struct Timeout: Error, CustomStringConvertible { let description: String }
    throw Timeout(description: "timed out waiting for \(what)")
}

func temporaryDirectory(_ prefix: String) throws -> String {
    let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func sha256Hex(ofFile path: String) async throws -> String {
    let result = try await run("sha256sum", [path])
    return String(result.text.prefix(64))
}

/// `gzip -dc` of bytes received.
func gunzip(_ data: Data) async throws -> Data {
    let path = NSTemporaryDirectory() + "gunzip-\(UUID().uuidString).gz"
    try data.write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await run("gzip", ["-dc", path]).stdout
}

/// SIGSTOP of PostgreSQL backends (the tests' way to freeze a COPY), with a
/// SIGCONT that comes after `atMost` seconds whatever the test does. A
/// backend stopped while it holds a lock that every new connection needs
/// (ProcArrayLock, taken briefly while it checks row visibility) stops the
/// whole shared test cluster, and a test stuck behind it never reaches its
/// own SIGCONT: a fresh-clone run hung that way with every new backend in
/// `startup`. A second SIGCONT, or one to a pid long gone, does no harm.
func freezeBackends(_ pids: [Int32], atMost seconds: Double = 60) {
    pids.forEach { kill($0, SIGSTOP) }
    DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { pids.forEach { kill($0, SIGCONT) } }
}
