import Foundation

/// A PostgreSQL cluster of a test's own, so that the test may stop, restart
/// or starve it without touching the one every other test shares. Runs as
/// the `postgres` user when the tests run as root (PostgreSQL refuses root).
final class PrivatePostgres: Sendable {
    let directory: String
    let port: Int
    /// A URI for the `postgres` database of this cluster.
    var url: String { "postgresql://postgres@127.0.0.1:\(self.port)/postgres" }

    static var bin: String {
        if let psql = ProcessInfo.processInfo.environment["PSQL"], psql.hasPrefix("/") {
            return URL(fileURLWithPath: psql).deletingLastPathComponent().path
        }
        return "/usr/lib/postgresql/15/bin"
    }

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    static func start() async throws -> PrivatePostgres {
        let directory = NSTemporaryDirectory() + "private-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let cluster = PrivatePostgres(directory: directory, port: try freePort())
        if getuid() == 0 {
            _ = try await run("chown", ["postgres:postgres", directory])
            _ = try await run("chmod", ["700", directory])
        }
        let initdb = try await cluster.asOwner("\(Self.bin)/initdb", ["-D", directory + "/data", "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
        guard initdb.status == 0 else { throw Failed(what: "initdb", output: initdb.stderr) }
        try await cluster.startServer()
        return cluster
    }

    func startServer() async throws {
        let result = try await self.asOwner(
            "\(Self.bin)/pg_ctl",
            [
                "-D", self.directory + "/data", "-l", self.directory + "/server.log", "-w", "-t", "60", "start", "-o",
                "-c listen_addresses=127.0.0.1 -p \(self.port) -c unix_socket_directories='\(self.directory)' -c fsync=off -c max_connections=100",
            ])
        guard result.status == 0 else { throw Failed(what: "pg_ctl start", output: result.stderr + ((try? String(contentsOfFile: self.directory + "/server.log", encoding: .utf8)) ?? "")) }
    }

    /// `pg_ctl stop -m fast`: every connection is cut.
    func stopServer() async throws {
        _ = try await self.asOwner("\(Self.bin)/pg_ctl", ["-D", self.directory + "/data", "-m", "fast", "-w", "stop"])
    }

    /// `pg_ctl restart -m fast`: every connection is cut, and the server is back.
    func restart() async throws {
        try await self.stopServer()
        try await self.startServer()
    }

    /// SIGSTOP (or SIGCONT) to the server and every backend: a database that
    /// accepts connections in the kernel and never answers.
    func freeze(_ frozen: Bool) async throws {
        let pidFile = try String(contentsOfFile: self.directory + "/data/postmaster.pid", encoding: .utf8)
        guard let postmaster = pidFile.split(separator: "\n").first.flatMap({ pid_t($0) }) else { throw Failed(what: "freeze", output: pidFile) }
        let signal = frozen ? SIGSTOP : SIGCONT
        // The server first: stopped, it forks no backend that the list below would miss.
        kill(postmaster, signal)
        let children = try await run("pgrep", ["-P", String(postmaster)]).text.split(separator: "\n").compactMap { pid_t($0) }
        for pid in children { kill(pid, signal) }
    }

    /// Stops the cluster and removes its files.
    func destroy() async {
        try? await self.stopServer()
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private func asOwner(_ program: String, _ arguments: [String]) async throws -> ProcessResult {
        if getuid() == 0 { return try await run("runuser", ["-u", "postgres", "--", program] + arguments) }
        return try await run(program, arguments)
    }

    struct Failed: Error, CustomStringConvertible {
        let what: String
        let output: String
        var description: String { "\(self.what) failed: \(self.output)" }
    }
}

/// A TCP port on loopback that nothing listens on now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EMFILE) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}
