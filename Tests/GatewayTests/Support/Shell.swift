import Foundation
import Synchronization

/// Runs real programs (curl, psql) for the tests, without blocking the
/// cooperative pool: the exit is awaited through `terminationHandler`, and
/// output goes to files, so large outputs never stall on a pipe.
struct ProcessResult: Sendable {
    let status: Int32
    let stdout: Data
    let stderr: String
    var text: String { String(decoding: self.stdout, as: UTF8.self) }
}

final class RunningProcess: Sendable {
    private let process: Process
    private let outPath: String
    private let errPath: String
    private let exit: Task<Int32, Never>

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.resolve(executable))
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let id = UUID().uuidString
        self.outPath = NSTemporaryDirectory() + "proc-\(id).out"
        self.errPath = NSTemporaryDirectory() + "proc-\(id).err"
        _ = FileManager.default.createFile(atPath: self.outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: self.errPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: self.outPath)
        process.standardError = FileHandle(forWritingAtPath: self.errPath)
        process.standardInput = FileHandle.nullDevice
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { p in
            continuation.yield(p.terminationStatus)
            continuation.finish()
        }
        self.process = process
        self.exit = Task { for await status in stream { return status }; return -1 }
        try process.run()
    }

    var isRunning: Bool { self.process.isRunning }

    func wait() async -> ProcessResult {
        let status = await self.exit.value
        let out = (try? Data(contentsOf: URL(fileURLWithPath: self.outPath))) ?? Data()
        let err = (try? String(contentsOfFile: self.errPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: self.outPath)
        try? FileManager.default.removeItem(atPath: self.errPath)
        return ProcessResult(status: status, stdout: out, stderr: err)
    }

    func terminate() { if self.process.isRunning { self.process.terminate() } }

    /// SIGKILL: the process gets no chance to clean up, as in a crash.
    func kill9() { if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) } }

    /// What it has written to stderr so far.
    var stderrSoFar: String { (try? String(contentsOfFile: self.errPath, encoding: .utf8)) ?? "" }

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
