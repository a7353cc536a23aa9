import Cache
import Hummingbird
import NIOPosix
import Synchronization

/// `GET /health`: 200 when the database answers, the cache directory is
/// writable and the export journal has been read, else 503; the JSON says
/// which part is unhealthy.
///
/// The probes (a new database connection and `SELECT 1`; a file written,
/// synced and removed) run on the thread pools, and at most one set runs at a
/// time: concurrent requests share it, and its answer serves for a second.
/// So a flood of health checks costs the database one connection a second,
/// and an answer never lags the truth by more than a second plus the probe.
struct HealthController: Sendable {
    let probe: HealthProbe
    /// How the API is protected (`AccessControl.mode`): "tokens", or open and why.
    let access: String
    /// True once the journal has been read (`ExportManager.isJournalLoaded`).
    let journalLoaded: @Sendable () -> Bool

    private struct Body: Encodable {
        let status: String
        let database: String
        let cache: String
        let journal: String
        let access: String
    }

    func addRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/health") { _, _ in try await self.check() }
        router.head("/health") { _, _ in ExportController.headersOnly(try await self.check()) }
    }

    func check() async throws -> Response {
        let (databaseOK, cacheOK) = await self.probe.result()
        let journalOK = self.journalLoaded()
        let healthy = databaseOK && cacheOK && journalOK
        let body = Body(
            status: healthy ? "ok" : "unhealthy", database: databaseOK ? "ok" : "unreachable",
            cache: cacheOK ? "ok" : "not writable", journal: journalOK ? "ok" : "not read yet",
            access: self.access
        )
        return try JSONBody.response(status: healthy ? .ok : .serviceUnavailable, body, headers: [.cacheControl: "no-store"])
    }
}

/// One shared, briefly remembered health probe (see `HealthController`).
final class HealthProbe: Sendable {
    typealias Result = (database: Bool, cache: Bool)

    private struct State {
        var last: (at: ContinuousClock.Instant, result: Result)?
        var running: Task<Result, Never>?
    }

    private let database: PostgresSettings
    private let store: ContentStore
    private let pools: BlockingPools
    private let freshFor: Duration
    private let state = Mutex(State())

    init(database: PostgresSettings, store: ContentStore, pools: BlockingPools, freshFor: Duration = .seconds(1)) {
        // Health must answer quickly even when the database host does not.
        var settings = database
        settings.connectTimeoutSeconds = min(settings.connectTimeoutSeconds, 3)
        self.database = settings
        self.store = store
        self.pools = pools
        self.freshFor = freshFor
    }

    func result() async -> Result {
        let now = ContinuousClock.now
        let pending = self.state.withLock { state -> Task<Result, Never>? in
            if let last = state.last, now - last.at < self.freshFor { return nil }
            if let running = state.running { return running }
            // One short task per second at most, awaited by every caller.
            let task = Task { await self.probe() }
            state.running = task
            return task
        }
        guard let pending else { return self.state.withLock { $0.last?.result } ?? (false, false) }
        return await pending.value
    }

    private func probe() async -> Result {
        let (settings, store, pool) = (self.database, self.store, self.pools.probes)
        let database = Task {
            (try? await pool.runIfActive { () -> Bool in
                guard let db = try? PostgresConnection(settings) else { return false }
                defer { db.close() }
                return (try? db.execute("SELECT 1")) != nil
            }) ?? false
        }
        let cache = Task { (try? await pool.runIfActive { store.isWritable() }) ?? false }
        // A probe that hangs (a host that stopped answering after the
        // connection was made) counts as a failure after 4 s.
        let result = (await Self.value(of: database, within: .seconds(4)) ?? false, await Self.value(of: cache, within: .seconds(4)) ?? false)
        self.state.withLock { state in
            state.last = (ContinuousClock.now, result)
            state.running = nil
        }
        return result
    }

    /// The task's value, or nil if it takes longer than `limit` (the task
    /// itself goes on and ends on its own).
    private static func value(of task: Task<Bool, Never>, within limit: Duration) async -> Bool? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool?, Never>) in
            let once = ResumeOnce(continuation)
            Task { once.resume(await task.value) }
            Task {
                try? await Task.sleep(for: limit)
                once.resume(nil)
            }
        }
    }
}

/// Resumes a continuation with the first of several answers.
private final class ResumeOnce: Sendable {
    private let continuation: Mutex<CheckedContinuation<Bool?, Never>?>

    init(_ continuation: CheckedContinuation<Bool?, Never>) {
        self.continuation = Mutex(continuation)
    }

    func resume(_ value: Bool?) {
        let pending = self.continuation.withLock { stored -> CheckedContinuation<Bool?, Never>? in
            defer { stored = nil }
            return stored
        }
        pending?.resume(returning: value)
    }
}
