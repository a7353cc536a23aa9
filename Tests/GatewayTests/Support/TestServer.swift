import Foundation
import Hummingbird
import Logging
import NIOPosix
import Testing

@testable import Gateway

/// A gateway running in this process on a free port, on a database of its own
/// (created on the test PostgreSQL that scripts/test.sh started, and seeded
/// by the gateway itself), with its own cache folder.
final class TestServer: Sendable {
    let port: Int
    let databaseURL: String
    let databaseName: String
    let cacheDirectory: String
    let manager: ExportManager
    private let task: Task<Void, any Error>

    static var adminURL: String {
        ProcessInfo.processInfo.environment["TEST_DATABASE_URL"] ?? "postgresql://postgres@127.0.0.1:5432/postgres"
    }

    static var psql: String { ProcessInfo.processInfo.environment["PSQL"] ?? "psql" }

    static func start(
        rows: Int = 3000,
        maxConcurrent: Int = 2,
        maxQueued: Int = 100,
        databaseURL: String? = nil,
        seed: Bool = true,
        rangeWaitSeconds: Int = 15,
        cacheTTLSeconds: Int = 600,
        exportTTLSeconds: Int = 86_400,
        cacheMaxBytes: Int = 0,
        cacheDirectory: String? = nil,
        fastStart: Bool = true,
        instanceID: String? = nil,
        leaseSeconds: Int? = nil,
        logHandler: (any LogHandler)? = nil,
        exportsTuning: (inout Configuration) -> Void = { _ in }
    ) async throws -> TestServer {
        let name = "gw_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
        let url: String
        if let databaseURL {
            url = databaseURL
        } else {
            let admin = Self.adminURL
            try await NIOThreadPool.singleton.runIfActive {
                let db = try PostgresConnection(url: admin)
                defer { db.close() }
                try db.execute("CREATE DATABASE \(name)")
            }
            // Same server and user, the new database: replace the URI's path.
            let path = try #require(admin.range(of: "/", options: .backwards))
            url = admin[..<path.upperBound] + name
        }
        var configuration = Configuration()
        configuration.http.port = 0
        configuration.database.url = url
        configuration.database.seedRows = rows
        configuration.database.seed = seed
        configuration.cache.directory = try temporaryDirectory("gateway-cache")
        configuration.exports.maxConcurrent = maxConcurrent
        configuration.exports.maxQueued = maxQueued
        configuration.exports.rangeWaitSeconds = rangeWaitSeconds
        configuration.exports.cacheTTLSeconds = cacheTTLSeconds
        configuration.exports.exportTTLSeconds = exportTTLSeconds
        configuration.cache.maxBytes = cacheMaxBytes
        if let cacheDirectory { configuration.cache.directory = cacheDirectory }
        configuration.exports.fastStart = fastStart
        // One id per cache folder: a server started again on the same folder
        // is the same instance, and takes back its own runs at once.
        let folder = configuration.cache.directory.split(separator: "/").last.map(String.init) ?? "cache"
        configuration.setInstanceID(instanceID ?? "test-" + String(folder.utf8.filter(Configuration.Cluster.isIDByte).map { Character(UnicodeScalar($0)) }.prefix(48)))
        if let leaseSeconds { configuration.setLeaseSeconds(leaseSeconds) }
        exportsTuning(&configuration)
        // Quiet by default: stopping a server with open connections logs errors
        // that are expected here. TEST_LOG_LEVEL=debug shows everything.
        var logger = logHandler.map { handler in Logger(label: "test-gateway") { _ in handler } } ?? Logger(label: "test-gateway")
        logger.logLevel = logHandler != nil ? .info : ProcessInfo.processInfo.environment["TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical

        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let app = try await buildApplication(configuration, logger: logger) { channel in
            portContinuation.yield(channel.localAddress?.port ?? 0)
        }
        let task = Task {
            defer { portContinuation.finish() }
            try await app.application.run()
        }
        let manager = app.manager
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            task.cancel()
            _ = await task.result
            struct NotStarted: Error {}
            throw NotStarted()
        }
        return TestServer(port: port, databaseURL: url, databaseName: name, cacheDirectory: configuration.cache.directory, manager: manager, task: task)
    }

    private init(port: Int, databaseURL: String, databaseName: String, cacheDirectory: String, manager: ExportManager, task: Task<Void, any Error>) {
        self.manager = manager
        self.port = port
        self.databaseURL = databaseURL
        self.databaseName = databaseName
        self.cacheDirectory = cacheDirectory
        self.task = task
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(self.port)\(path)" }

    /// Stops the server (its tasks are cancelled: a shutdown at whatever
    /// moment it comes), and removes its cache folder unless asked to keep it.
    func stop(keepingCache: Bool = false) async {
        self.task.cancel()
        _ = await self.task.result
        if !keepingCache { try? FileManager.default.removeItem(atPath: self.cacheDirectory) }
    }

    /// Files in the cache's `objects/` folder, or in this server's own
    /// partial folder (`partial/<instance>/`) for "partial".
    func files(in folder: String) -> [String] {
        let path = folder == "partial" ? self.manager.store.partialDirectory : "\(self.cacheDirectory)/\(folder)"
        return (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    }

    /// Runs SQL on this server's database from a connection of the test's own.
    func sql(_ statement: String) async throws -> [[String?]] {
        let url = self.databaseURL
        return try await NIOThreadPool.singleton.runIfActive {
            let db = try PostgresConnection(url: url)
            defer { db.close() }
            return try db.execute(statement)
        }
    }

    /// What PostgreSQL itself writes for this query: `psql \copy … TO STDOUT`
    /// in a UTC session, the oracle for every CSV byte.
    func psqlCopy(_ select: String, delimiter: String = ",", quote: String = "\"", header: Bool = true, extraOptions: String = "") async throws -> Data {
        func literal(_ s: String) -> String { s == "\t" ? "E'\\t'" : "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
        let command = "\\copy (\(select)) TO STDOUT WITH (FORMAT csv, HEADER \(header), DELIMITER \(literal(delimiter)), QUOTE \(literal(quote))\(extraOptions))"
        let result = try await run(Self.psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.databaseURL, "-c", command], environment: ["PGTZ": "UTC"])
        guard result.status == 0 else {
            struct PsqlFailed: Error { let stderr: String }
            throw PsqlFailed(stderr: result.stderr)
        }
        return result.stdout
    }
}

/// Holds `ACCESS EXCLUSIVE` on `users` in an open transaction, so an export's
/// query waits (running, no bytes yet) until `release()`: a real way to keep
/// an export in flight for as long as a test needs.
final class TableLock: @unchecked Sendable {
    // @unchecked: the connection is used only through the thread pool, one call at a time.
    private let db: PostgresConnection

    private init(db: PostgresConnection) { self.db = db }

    static func lockUsers(_ server: TestServer) async throws -> TableLock {
        try await Self.lockUsers(databaseURL: server.databaseURL)
    }

    static func lockUsers(databaseURL url: String) async throws -> TableLock {
        try await Self.lock("users", databaseURL: url)
    }

    /// `table` is the test's own constant, never client input.
    static func lock(_ table: String, databaseURL url: String) async throws -> TableLock {
        let db = try await NIOThreadPool.singleton.runIfActive { () -> TableLockBox in
            let db = try PostgresConnection(url: url)
            try db.execute("BEGIN; LOCK TABLE \(table) IN ACCESS EXCLUSIVE MODE")
            return TableLockBox(db: db)
        }
        return TableLock(db: db.db)
    }

    func release() async throws {
        let db = self.db
        let box = TableLockBox(db: db)
        try await NIOThreadPool.singleton.runIfActive {
            try box.db.execute("ROLLBACK")
            box.db.close()
        }
    }
}

/// Carries a connection across the thread-pool boundary.
struct TableLockBox: @unchecked Sendable {
    let db: PostgresConnection
}

/// Keeps every log line a test server writes, as text, for tests that read its log.
final class CapturedLog: LogHandler, @unchecked Sendable {
    // @unchecked: `lines` is guarded by `lock`; metadata and level are set once, before use.
    private let lock = NSLock()
    private var captured: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (self.metadata.merging(event.metadata ?? [:]) { _, new in new }).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let line = "\(event.level) \(event.message) \(fields.joined(separator: " "))"
        self.lock.withLock { self.captured.append(line) }
    }

    var lines: [String] { self.lock.withLock { self.captured } }
}

extension TestServer {
    /// The run behind an export id, as the manager holds it.
    func exportRun(_ exportID: String) -> ExportRun? {
        UUID(uuidString: exportID).flatMap { self.manager.job($0) }?.run
    }

    /// The backends of this database running a COPY now (the export's
    /// pieces), of one gateway's connections when `application` is given
    /// (`gateway:<INSTANCE_ID>`).
    func activeCopyPIDs(application: String? = nil) async throws -> [Int32] {
        let only = application.map { " AND application_name = '\($0)'" } ?? ""
        return try await self.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%' AND state = 'active'\(only)")
            .compactMap { $0.first.flatMap { $0.flatMap { Int32($0) } } }
    }

    /// `exportStallsShort(statusURL:of:past:)` for an export of this server.
    func exportStallsShort(_ exportID: String, of rows: Int, past floor: Int = -1) async throws -> Bool {
        try await GatewayTests.exportStallsShort(statusURL: self.url("/exports/\(exportID)/status"), of: rows, past: floor)
    }
}

/// True when the export is running and has read the same number of rows,
/// short of `rows` and more than `floor`, for a whole second: a backend
/// frozen with SIGSTOP was caught mid-COPY, not after its last row went out
/// while pg_stat_activity still said active (seen: then the export ran on
/// to the end, and a test that meant to cancel, fail or crash it mid-way
/// did not), nor before its first (`floor`: the rows of the other pieces).
func exportStallsShort(statusURL: String, of rows: Int, past floor: Int = -1) async throws -> Bool {
    var last = -1
    for _ in 0..<10 {
        let status = try await curl(statusURL).json
        guard status["status"] as? String == "running", let read = status["rowsRead"] as? Int else { return false }
        if read == last { return read < rows && read > floor }
        last = read
        try await Task.sleep(for: .seconds(1))
    }
    return false
}
