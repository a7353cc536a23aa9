import Cache
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The front of the exports for HTTP: admits them (`+Admission`, through
/// the shared queue in PostgreSQL, which coalesces identical requests across
/// every gateway on the database), looks them up (in memory, else in the
/// database: any gateway answers for any export), lists them (`+List`),
/// cancels and deletes them, and hands out their files. Its one lock
/// guards `ExportRegistry` (what this gateway knows of exports and runs: a
/// value type whose methods return what to do), never held across I/O; what
/// comes back is done after the lock is let go.
///
/// Its parts, each owning its own state (see docs/ARCHITECTURE.md):
/// `EvictingCacheBudget` (the cache's bytes, LRU, eviction; `+Cache` makes
/// room and publishes), `ExportWorkers` (threads, connections, a run's end
/// with the queue), `ProducerStorage` (where a runner's or a gzip
/// producer's bytes go), `GzipService` (the gzip forms), `MirrorState` (how
/// another gateway's run is followed; `+Cluster` does what it says, for
/// `ClusterCoordinator`'s loops), `Janitor` (its round, and the files
/// it removes; expiry and forgetting in `+Expiry`) and the restore after a
/// restart (`+Restore`).
///
/// Acknowledgements are durable: an export exists for a client (202), is
/// cancelled (200) or deleted (204) only once the journal holds it; when the
/// journal cannot be written the request fails (`journalUnavailable`, a 503)
/// and nothing changes.
///
/// A `Service`: it starts the worker threads, reads the journal again until
/// it could, and when a shutdown begins it interrupts what is queued or
/// running here (their partial files go; the runs go back to the shared
/// queue, so another gateway, or the next start, runs them again).
final class ExportManager: Service, Sendable {
    enum SubmitError: Error {
        /// MAX_QUEUED_EXPORTS: too many exports wait or run (a 429).
        case queueFull
        /// TOKEN_MAX_ACTIVE_EXPORTS: this token has that many waiting or running (a 429).
        case tokenQueueFull(limit: Int)
        /// TOKEN_CREATES_PER_MINUTE: this token's minute is used up (a 429).
        case tokenRateLimited(limit: Int, retryAfterSeconds: Int)
        /// MAX_EXPORTS: too many export ids are kept (a 429).
        case tooManyExports
        /// CACHE_MAX_BYTES is reached and nothing can be evicted, or the
        /// export is estimated larger than the room it may have (a 507; the
        /// message says which).
        case cacheFull(String)
        /// The server is stopping (a 503).
        case shuttingDown
        /// The journal could not record it (a 503).
        case journalUnavailable
    }

    /// A cancel or delete that the journal could not record; nothing changed.
    struct JournalUnavailable: Error {}

    enum Lookup {
        case found(ExportJob)
        /// It existed, and EXPORT_TTL has passed since it was asked for, or
        /// (`evicted`) its file was evicted to make room in a full cache.
        case expired(evicted: Bool)
        case notFound
        /// The journal has not been read yet: the id may well exist.
        case unknownYet
    }

    enum DeleteOutcome {
        case cancelled(ExportJob)
        case deleted
        case notFound
        /// The journal has not been read yet.
        case unknownYet
    }

    let store: ContentStore
    let journal: ExportJournal
    let pools: BlockingPools
    let gzip: GzipService
    let limits: Configuration.Exports
    let cacheTTL: TimeInterval
    let exportTTL: TimeInterval
    /// The cache's bytes under CACHE_MAX_BYTES, and its LRU order.
    let cache: EvictingCacheBudget
    /// TOKEN_CACHE_SHARE: percent of CACHE_MAX_BYTES one token's files may take.
    let tokenCacheSharePercent: Int
    /// INSTANCE_ID and LEASE_SECONDS.
    let cluster: Configuration.Cluster
    /// What this gateway's claims record (`ExportJournal.Claim`).
    var claimTemplate: ExportJournal.Claim {
        ExportJournal.Claim(instance: self.cluster.instanceID, leaseSeconds: self.cluster.leaseSeconds, partialFolder: self.store.partialFolder)
    }
    /// Work for the cluster loops (`ClusterCoordinator`).
    let signals = ClusterSignals()
    /// The threads that run claimed runs, and their connections.
    let workers: ExportWorkers
    /// What this gateway knows of the exports and runs; the one lock here,
    /// never held across I/O.
    let registry = Mutex(ExportRegistry())
    let logger: Logger

    /// - Parameter cacheMaxBytes: CACHE_MAX_BYTES as resolved at start (0: no bound).
    init(configuration: Configuration, cacheMaxBytes: Int, store: ContentStore, journal: ExportJournal, pools: BlockingPools, logger: Logger) {
        self.store = store
        self.journal = journal
        self.pools = pools
        self.logger = logger
        let exports = configuration.exports
        self.limits = exports
        self.cluster = configuration.cluster
        self.gzip = GzipService(
            producer: GzipProducer(store: store, level: Int32(exports.gzipLevel), threadPool: pools.compression, logger: logger), workers: exports.gzipWorkers, queue: exports.gzipQueue)
        self.cacheTTL = TimeInterval(exports.cacheTTLSeconds)
        self.exportTTL = TimeInterval(exports.exportTTLSeconds)
        self.cache = EvictingCacheBudget(limit: cacheMaxBytes)
        self.tokenCacheSharePercent = configuration.cache.tokenSharePercent
        // Started in `run()`: until then nothing is claimed.
        self.workers = ExportWorkers(configuration: configuration, store: store, journal: journal, logger: logger)
    }

    /// Starts the worker threads; until shutdown, reads the journal again
    /// while it could not, then interrupts what is queued or running here
    /// and stops the worker threads.
    func run() async throws {
        self.workers.start()
        self.registry.withLock { $0.markStarted() }
        self.signals.wakeClaims()
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Connections for the first export, so it does not pay for them (10 ms each).
                try? await self.onDatabasePool { $0.workers.warmConnections() }
            }
            await cancelWhenGracefulShutdown {
                // A journal that could not be read at start: try again until it is.
                while !self.isJournalLoaded, (try? await Task.sleep(for: .seconds(2))) != nil {
                    await self.loadJournal()
                }
                // Returns on graceful shutdown, throws when cancelled: both end it.
                try? await gracefulShutdown()
            }
            self.beginShutdown()
            await self.releaseClaims()
        }
        self.workers.stop()
    }

    /// At shutdown: the runs claimed here go back to the shared queue now,
    /// for another gateway to take at once, rather than when their workers
    /// have stopped (the process may exit first) or their leases run out.
    /// Fenced by the claims: a worker that ends meanwhile changes nothing.
    private func releaseClaims() async {
        let claimed = self.registry.withLock { $0.claimed }
        guard !claimed.isEmpty else { return }
        try? await self.onDatabasePool { manager in
            for (id, claim) in claimed { try? manager.journal.release(id, attempt: claim.attempt, instance: manager.instanceID) }
        }
        self.logger.notice("shutdown: running exports handed back to the queue", metadata: [LogKey.exportsReleased: "\(claimed.count)"])
    }

    /// This gateway's INSTANCE_ID.
    var instanceID: String { self.cluster.instanceID }

    /// True once shutdown has begun.
    var isShuttingDown: Bool { self.registry.withLock { $0.shuttingDown } }

    /// Stops taking exports and interrupts what is queued or running: their
    /// queries are cancelled, their live readers see an aborted transfer, and
    /// the runs this gateway ran go back to the shared queue, so another
    /// gateway (or the next start) runs them again. Downloads of finished
    /// files go on. Safe to call more than once.
    func beginShutdown() {
        // First: a run that ends from now on goes back to the queue.
        self.workers.beginStopping()
        let active = self.registry.withLock { $0.beginShutdown() }
        self.gzip.stop()
        for run in active {
            let (_, cancellers) = run.interrupt()
            self.cancelQueries(cancellers)
        }
        if !active.isEmpty { self.logger.notice("shutdown: interrupted queued and running exports", metadata: [LogKey.exportsInterrupted: "\(active.count)"]) }
    }

    // MARK: Lookup, cancel, delete

    func job(_ id: UUID) -> ExportJob? {
        self.registry.withLock { $0.job(id) }
    }

    /// Finds an export for a client: one the caller may not see is not
    /// found (and nothing else happens); expired ones (past EXPORT_TTL) are
    /// removed on the spot and answered as such; a found one counts as a use
    /// of its run for eviction, unless `touch` is false (a listing is not a use).
    func lookup(_ id: UUID, for caller: Caller, touch: Bool = true) async -> Lookup {
        let (known, expired, loaded) = self.registry.withLock { ($0.job(id), $0.expiredExport(id), $0.journalLoaded) }
        guard loaded else { return .unknownYet }
        if let expired { return caller.sees(exportID: id, owner: expired.owner) ? .expired(evicted: expired.evicted) : .notFound }
        var job = known
        if job == nil {
            // Perhaps made on another gateway: the database knows.
            switch await self.fetch(id) {
            case .found(let fetched): job = fetched
            case .expired(let owner, let evicted): return caller.sees(exportID: id, owner: owner) ? .expired(evicted: evicted) : .notFound
            case .notFound: return .notFound
            case .unavailable: return .unknownYet
            }
        }
        guard let job, caller.sees(exportID: id, owner: job.owner) else { return .notFound }
        if Date().timeIntervalSince(job.createdAt) >= self.exportTTL {
            await self.expire([job])
            return .expired(evicted: false)
        }
        guard touch else { return .found(job) }
        let now = Date()
        self.registry.withLock { registry in
            // Only for a run still kept: a forgotten one's entry would never go.
            if registry.keeps(job.run) { self.cache.touch(job.run.id, at: now) }
        }
        return .found(job)
    }

    /// Cancels a queued or running export (it stays, as `cancelled`; its run
    /// goes on while another export needs it), or deletes an ended or
    /// cancelled one, and its run's files once no export and no fresh cache
    /// entry needs them.
    /// The journal holds the change before anything happens; if it cannot,
    /// this throws and nothing changes.
    func delete(_ id: UUID, for caller: Caller) async throws(JournalUnavailable) -> DeleteOutcome {
        guard self.isJournalLoaded else { return .unknownYet }
        guard let job = self.job(id), caller.sees(exportID: id, owner: job.owner) else { return .notFound }
        // Queued or running: cancel. Ended, or cancelled already: delete, so
        // a cancelled export's id does not hold a MAX_EXPORTS slot until it expires.
        let cancelling = !job.isCancelled && (job.run.status == .queued || job.run.status == .running)
        let runCancelled: Bool
        do {
            runCancelled = try await self.onDatabasePool { manager in
                if cancelling { return try manager.journal.cancelExport(id).runCancelled }
                try manager.journal.deleteExport(id)
                return false
            }
        } catch {
            throw JournalUnavailable()
        }
        return cancelling ? self.applyCancel(job, runCancelled: runCancelled) : await self.applyDelete(job)
    }

    /// Marks the export cancelled and aborts its readers here; when the
    /// database cancelled its run too (no export on any gateway needs it
    /// any more), the run stops: its query here, or its readers here while
    /// another gateway's query is cancelled by that gateway, told by the
    /// database.
    /// (The notification of this very cancel may have marked it already.)
    @discardableResult
    func applyCancel(_ job: ExportJob, runCancelled: Bool) -> DeleteOutcome {
        let run = job.run
        if job.markCancelled() {
            self.registry.withLock { $0.cancelled(job) }
            self.logger.info("export cancelled", metadata: [LogKey.exportID: "\(job.id.uuidString.lowercased())", LogKey.runID: "\(run.id.uuidString.lowercased())"])
        }
        if runCancelled { self.cancel(run) }
        return .cancelled(job)
    }

    /// Removes an ended export (the journal has deleted it), and its run's
    /// files unless another export or the fresh cache entry for its request
    /// needs them. (The notification of this very delete may have removed it here already.)
    private func applyDelete(_ job: ExportJob) async -> DeleteOutcome {
        let removals = self.registry.withLock { registry -> [String] in
            registry.leave(job, keepingFreshRun: true) { self.isJoinable($0) }.map { self.cache.drop($0) } ?? []
        }
        // Before the answer: the 204 of the last export of a file means the file is gone.
        if !removals.isEmpty {
            let removed: Bool? = try? await self.onFilesPool { manager in
                for path in removals where !manager.cache.isHeld(path) { manager.removeUnreferenced(path) }
                return true
            }
            // The files thread is stopping: the next start removes them.
            if removed == nil { self.remove(removals) }
        }
        return .deleted
    }

    /// Cancels a run no export needs any more: its query if it runs here,
    /// its live readers here in any case.
    func cancel(_ run: ExportRun) {
        let (action, cancellers) = run.cancel()
        if case .alreadyEnded = action { return }
        self.cancelQueries(cancellers)
    }

    /// `PQcancel` opens a connection to the server and waits for it: never on
    /// the caller's executor, and on a pool of its own (it has no timeout).
    func cancelQueries(_ cancellers: [PostgresCanceller]) {
        for canceller in cancellers {
            self.pools.cancels.submit { state in
                // A stopped pool runs this at once on the caller's thread: the
                // process is ending, and its connections end with it.
                guard state == .active else { return }
                if let failure = canceller.cancel() {
                    self.logger.notice("query cancel not delivered; the worker stops at its next check", metadata: ["error": "\(failure)"])
                }
            }
        }
    }

    // MARK: Gzip

    /// The gzip form of an export's CSV (see `GzipService.form`), as this
    /// export's readers follow it; nil when there is none and none may start.
    func gzipFile(for job: ExportJob, start: Bool) -> GrowingFile? {
        let run = job.run
        let shared = self.gzip.form(of: run, start: start) { producer in
            ProducerStorage(manager: self, run: run, producer: producer, kind: .gzip, partialName: nil)
        }
        return shared.map { job.view(of: $0) }
    }

    /// True when a new gzip form could start now (what a HEAD answers as).
    var couldStartGzip: Bool { self.gzip.couldStart }

    // MARK: Workers

    /// Runs a claimed run on an export worker (`ExportWorkers`).
    func dispatch(_ run: ExportRun, attempt: Int, partialName: String?) {
        let storage = ProducerStorage(manager: self, run: run, producer: run.id, kind: .csv(attempt: attempt), partialName: partialName)
        self.workers.dispatch(run, attempt: attempt, storage: storage) { outcome in self.runEnded(run, outcome: outcome) }
    }

    /// A run claimed here ended (its end is in the shared queue already):
    /// its claim goes, and so does the run if it was published after its
    /// last export was cancelled; the claim loop looks for more.
    private func runEnded(_ run: ExportRun, outcome: ExportRunner.Outcome) {
        let removals = self.registry.withLock { registry -> [String] in
            let publishedAfterCancel = if case .publishedAfterCancel = outcome { true } else { false }
            return registry.runEnded(run, publishedAfterCancel: publishedAfterCancel).map { self.cache.drop($0) } ?? []
        }
        self.remove(removals)
        guard !self.isShuttingDown, !self.workers.isStopping else { return }
        switch outcome {
        case .completed, .publishedAfterCancel:
            break
        case .failed, .cancelled, .interrupted:
            // What the database says of it now (another attempt, elsewhere?).
            self.signals.refreshSoon([run.id])
        }
        self.signals.wakeClaims()
    }

    // MARK: Hops

    /// Runs blocking database work (the journal, cancels) on the database pool.
    func onDatabasePool<T: Sendable>(_ body: @escaping @Sendable (ExportManager) throws -> T) async throws -> T {
        try await self.pools.database.runIfActive { try body(self) }
    }

    /// Runs work on the one thread that changes `objects/`.
    func onFilesPool<T: Sendable>(_ body: @escaping @Sendable (ExportManager) throws -> T) async throws -> T {
        try await self.pools.files.runIfActive { try body(self) }
    }
}
