import Cache
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Owns every export and every run: admits runs through the scheduler, runs
/// them on a pool of `maxConcurrentExports` threads of its own (blocking
/// libpq never touches an event loop or the cooperative pool), coalesces
/// exports with the same canonical request into one run, cancels and deletes
/// them, and keeps the cache's ledger (`ExportManager+Cache.swift`), the
/// janitor (`+Janitor`) and the restore after a restart (`+Restore`).
///
/// Acknowledgements are durable: an export exists for a client (202), is
/// cancelled (200) or deleted (204) only once the journal holds it; when the
/// journal cannot be written the request fails (`journalUnavailable`, a 503)
/// and nothing changes.
///
/// A `Service`: it runs the janitor and the gzip producers, and when a
/// shutdown begins it interrupts what is queued or running (their partial
/// files go; the journal still says queued or running, so the next start
/// runs them again).
final class ExportManager: Service, Sendable {
    enum SubmitError: Error {
        /// MAX_QUEUED_EXPORTS: too many exports wait or run (a 429).
        case queueFull
        /// MAX_EXPORTS: too many export ids are kept (a 429).
        case tooManyExports
        /// CACHE_MAX_BYTES is reached and nothing can be evicted (a 507).
        case cacheFull
        /// The server is stopping (a 503).
        case shuttingDown
        /// The journal could not record it (a 503).
        case journalUnavailable
    }

    /// A cancel or delete that the journal could not record; nothing changed.
    struct JournalUnavailable: Error {}

    enum Lookup {
        case found(ExportJob)
        /// It existed, and EXPORT_TTL has passed since it was asked for.
        case expired
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

    struct State {
        var scheduler: ExportScheduler
        var jobs: [UUID: ExportJob] = [:]
        var runs: [UUID: ExportRun] = [:]
        /// The exports of each run that have not been cancelled or deleted.
        var members: [UUID: Set<UUID>] = [:]
        /// The run to join for a canonical request: running, queued, or
        /// completed less than `cacheTTL` ago.
        var latest: [String: ExportRun] = [:]
        /// Every byte of the cache, and which files runs hold.
        var ledger = CacheLedger()
        /// The published files each run holds in the ledger (its CSV, its gzip form).
        var held: [UUID: [String]] = [:]
        /// When each run was last asked for (joined or downloaded): the LRU order of eviction.
        var lastUsed: [UUID: Date] = [:]
        /// Exports past EXPORT_TTL, when they expired and whose they were:
        /// answered 410 (to their owner) rather than 404 for another
        /// EXPORT_TTL, then forgotten (as the journal does).
        var expired: [UUID: ExpiredExport] = [:]
        /// Gzip forms admitted (being made or waiting for a compressor).
        var gzipAdmitted = 0
        var shuttingDown = false
        /// The journal has been read and its exports restored (`loadJournal`).
        var journalLoaded = false
    }

    let store: ContentStore
    let journal: ExportJournal
    let pools: BlockingPools
    let runner: ExportRunner
    let gzipProducer: GzipProducer
    let limits: Configuration.Exports
    let cacheTTL: TimeInterval
    let exportTTL: TimeInterval
    /// 0: no bound.
    let cacheMaxBytes: Int
    /// Runs whose gzip form a reader asked for; `run` starts one producer each.
    private let gzipRequests: AsyncStream<(ExportRun, SharedFile)>
    private let gzipRequestSink: AsyncStream<(ExportRun, SharedFile)>.Continuation
    private let compressors: AsyncBudget
    private let workers: NIOThreadPool
    /// Threads for the later pieces of parallel exports (`ExportRunner`):
    /// `maxConcurrent × (parallelism − 1)`, so a piece never waits for one.
    private let pieceWorkers: NIOThreadPool?
    /// Export connections kept between exports (`PostgresConnectionPool`).
    let exportConnections: PostgresConnectionPool
    let state: Mutex<State>
    let logger: Logger

    /// - Parameter cacheMaxBytes: CACHE_MAX_BYTES as resolved at start (0: no bound).
    init(configuration: Configuration, cacheMaxBytes: Int, store: ContentStore, journal: ExportJournal, pools: BlockingPools, logger: Logger) {
        self.store = store
        self.journal = journal
        self.pools = pools
        self.logger = logger
        let exports = configuration.exports
        self.limits = exports
        var exportSettings = configuration.database.settings
        // Told apart from the journal's in pg_stat_activity.
        exportSettings.applicationName = "csv-export-gateway/export"
        self.exportConnections = PostgresConnectionPool(settings: exportSettings, maxIdle: exports.maxConcurrent * exports.parallelism)
        self.runner = ExportRunner(connections: self.exportConnections, store: store, journal: journal, logger: logger, fastStart: exports.fastStart, parallelism: exports.parallelism, minRowsPerPiece: exports.minRowsPerPiece)
        self.gzipProducer = GzipProducer(store: store, level: Int32(exports.gzipLevel), threadPool: pools.compression, logger: logger)
        self.cacheTTL = TimeInterval(exports.cacheTTLSeconds)
        self.exportTTL = TimeInterval(exports.exportTTLSeconds)
        self.cacheMaxBytes = cacheMaxBytes
        (self.gzipRequests, self.gzipRequestSink) = AsyncStream.makeStream()
        self.compressors = AsyncBudget(limit: exports.gzipWorkers)
        self.workers = NIOThreadPool(numberOfThreads: exports.maxConcurrent)
        self.workers.start()
        if exports.parallelism > 1 {
            let pieceWorkers = NIOThreadPool(numberOfThreads: exports.maxConcurrent * (exports.parallelism - 1))
            pieceWorkers.start()
            self.pieceWorkers = pieceWorkers
        } else {
            self.pieceWorkers = nil
        }
        self.state = Mutex(State(scheduler: ExportScheduler(maxRunning: exports.maxConcurrent, maxQueued: exports.maxQueued)))
    }

    /// Runs the janitor and the gzip producers until shutdown; then
    /// interrupts what is queued or running and stops the worker threads.
    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Returns on graceful shutdown, throws when cancelled: both end it.
                try? await gracefulShutdown()
                self.beginShutdown()
                // Only now may `run` end: ending before the service group asks
                // counts as a failure, even when the shutdown began earlier.
                self.gzipRequestSink.finish()
            }
            group.addTask {
                // A journal that could not be read at start: try again until it is.
                while !self.isJournalLoaded, (try? await Task.sleep(for: .seconds(2))) != nil {
                    await self.loadJournal()
                }
            }
            group.addTask {
                // Connections for the first export, so it does not pay for them (10 ms each).
                try? await self.onDatabasePool { $0.exportConnections.warm($0.limits.parallelism) }
            }
            group.addTask {
                // The janitor: ends with the group's cancellation at shutdown.
                while (try? await Task.sleep(for: self.sweepInterval)) != nil {
                    await self.sweep()
                }
            }
            for await (run, target) in self.gzipRequests {
                group.addTask { await self.produceGzip(of: run, into: target) }
            }
            // The stream ends at shutdown: stop the producers still compressing.
            group.cancelAll()
        }
        // Not awaited: a worker stuck in a database call that nothing can
        // interrupt (the host vanished) must not hold the shutdown; it dies
        // with the process. Every other worker has stopped by now (its run
        // was interrupted, and a COPY looks for that every second).
        self.workers.shutdownGracefully { _ in }
        self.pieceWorkers?.shutdownGracefully { _ in }
        self.exportConnections.closeAll()
    }

    /// True once shutdown has begun.
    var isShuttingDown: Bool { self.state.withLock { $0.shuttingDown } }

    /// Stops taking exports and interrupts what is queued or running: their
    /// queries are cancelled, their live readers see an aborted transfer, and
    /// the journal still has them queued or running, so the next start runs
    /// them again. Downloads of finished files go on. Safe to call more than once.
    func beginShutdown() {
        let active = self.state.withLock { state -> [ExportRun] in
            guard !state.shuttingDown else { return [] }
            state.shuttingDown = true
            return state.runs.values.filter { $0.status == .queued || $0.status == .running }
        }
        for run in active {
            let (action, cancellers) = run.interrupt()
            if action == .removeFromQueue { self.state.withLock { _ = $0.scheduler.removeQueued(run.id) } }
            self.cancelQueries(cancellers)
        }
        if !active.isEmpty { self.logger.notice("shutdown: interrupted queued and running exports", metadata: ["gateway.exports.interrupted": "\(active.count)"]) }
    }

    // MARK: Admission

    /// Admits a new export. It joins the run of an identical request that is
    /// queued, running or fresh (unless `fresh` asks for a new run);
    /// otherwise a new run starts now, or waits its turn, or is refused when
    /// the limits are reached. Returns once the journal holds the export.
    func submit(_ request: ExportRequest, owner: String?, fresh: Bool = false) async throws(SubmitError) -> ExportJob {
        let key = request.cacheKey
        // Join first: making room could evict the very file this request would reuse.
        var admitted = self.state.withLock { state -> Result<Admitted, SubmitError>? in
            if let refusal = self.refusal(state) { return .failure(refusal) }
            return fresh ? nil : self.join(key, owner: owner, state: &state).map { $0.map { Admitted(job: $0, admission: nil) } }
        }
        if admitted == nil {
            // A new run needs room for at least its first write.
            let hasRoom = self.hasRoom(for: CopyPiece.stagingSize)
            admitted = self.state.withLock { state -> Result<Admitted, SubmitError> in
                if let refusal = self.refusal(state) { return .failure(refusal) }
                // An identical request may have started a run meanwhile.
                if !fresh, let joined = self.join(key, owner: owner, state: &state) { return joined.map { Admitted(job: $0, admission: nil) } }
                guard hasRoom else { return .failure(.cacheFull) }
                guard self.activeJobs(state) < self.activeJobLimit else { return .failure(.queueFull) }
                let run = ExportRun(request: request)
                let admission = state.scheduler.submit(run.id)
                guard admission != .rejected else { return .failure(.queueFull) }
                let job = ExportJob(run: run, owner: owner)
                state.runs[run.id] = run
                state.latest[key] = run
                state.lastUsed[run.id] = Date()
                state.jobs[job.id] = job
                state.members[run.id] = [job.id]
                return .success(Admitted(job: job, admission: admission))
            }
        }
        guard let admitted else { throw .queueFull }
        let (job, admission): (ExportJob, ExportScheduler.Admission?)
        switch admitted {
        case .success(let a): (job, admission) = (a.job, a.admission)
        case .failure(let error): throw error
        }
        // Journaled before the client hears of it, so the id survives a crash.
        do {
            try await self.onDatabasePool { try $0.journal.insert(job) }
        } catch {
            self.abandon(job)
            // A run admitted to start is dispatched whatever happened: the
            // worker sees it cancelled and frees its slot.
            if admission == .start { self.dispatch(job.run) }
            throw .journalUnavailable
        }
        if admission == .start { self.dispatch(job.run) }
        return job
    }

    private struct Admitted {
        let job: ExportJob
        let admission: ExportScheduler.Admission?
    }

    /// Why no export may be admitted now, if so.
    private func refusal(_ state: State) -> SubmitError? {
        if state.shuttingDown { return .shuttingDown }
        if !state.journalLoaded { return .journalUnavailable }
        if state.jobs.count >= self.limits.maxExports { return .tooManyExports }
        return nil
    }

    /// Export ids that may wait or run at once, coalesced or not.
    private var activeJobLimit: Int { self.limits.maxConcurrent + self.limits.maxQueued }

    /// Export ids whose run is queued or running.
    private func activeJobs(_ state: State) -> Int {
        // A run is in one of the two, never both.
        let count: (Int, UUID) -> Int = { $0 + (state.members[$1]?.count ?? 0) }
        return state.scheduler.running.reduce(0, count) + state.scheduler.queue.reduce(0, count)
    }

    /// A new export of the run that answers `key`, if one may be joined;
    /// a join to a queued or running run counts against the queue's bound.
    private func join(_ key: String, owner: String?, state: inout State) -> Result<ExportJob, SubmitError>? {
        guard let run = state.latest[key], self.isJoinable(run, state: state) else { return nil }
        if run.status != .completed, self.activeJobs(state) >= self.activeJobLimit { return .failure(.queueFull) }
        state.lastUsed[run.id] = Date()
        let job = ExportJob(run: run, owner: owner)
        state.jobs[job.id] = job
        state.members[run.id, default: []].insert(job.id)
        return .success(job)
    }

    /// A run another export may join: not ended badly nor interrupted, and if
    /// completed, completed within `cacheTTL` and still holding its file.
    func isJoinable(_ run: ExportRun, state: State) -> Bool {
        switch run.status {
        case .queued, .running:
            return !run.isInterrupted
        case .completed:
            guard let completedAt = run.completedAt, let file = run.publishedFile else { return false }
            return Date().timeIntervalSince(completedAt) < self.cacheTTL && state.ledger.isHeld(file.path)
        case .failed, .cancelled:
            return false
        }
    }

    /// Takes back an export the journal could not record: it never existed
    /// for the client, and a run no one else needs is cancelled before it runs.
    private func abandon(_ job: ExportJob) {
        let run = job.run
        let alone = self.state.withLock { state -> Bool in
            state.jobs[job.id] = nil
            return state.removeMember(job)
        }
        if alone { self.cancel(run) }
        self.logger.warning("export not admitted: the journal is unavailable", metadata: [LogKey.exportID: "\(job.id.uuidString.lowercased())"])
    }

    // MARK: Lookup, cancel, delete

    func job(_ id: UUID) -> ExportJob? {
        self.state.withLock { $0.jobs[id] }
    }

    /// Finds an export for a client: one the caller may not see is not
    /// found (and nothing else happens); expired ones (past EXPORT_TTL) are
    /// removed on the spot and answered as such; a found one counts as a use
    /// of its run for eviction.
    func lookup(_ id: UUID, for caller: Caller) async -> Lookup {
        let (job, expired, loaded) = self.state.withLock { ($0.jobs[id], $0.expired[id], $0.journalLoaded) }
        guard loaded else { return .unknownYet }
        if let expired { return caller.sees(exportID: id, owner: expired.owner) ? .expired : .notFound }
        guard let job, caller.sees(exportID: id, owner: job.owner) else { return .notFound }
        if Date().timeIntervalSince(job.createdAt) >= self.exportTTL {
            await self.expire([job])
            return .expired
        }
        self.state.withLock { state in
            // Only for a run still kept: a forgotten one's entry would never go.
            if state.runs[job.run.id] === job.run { state.lastUsed[job.run.id] = Date() }
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
        do {
            try await self.onDatabasePool { manager in
                if cancelling { try manager.journal.markCancelled(id) } else { try manager.journal.delete(id) }
            }
        } catch {
            throw JournalUnavailable()
        }
        return cancelling ? self.applyCancel(job) : self.applyDelete(job)
    }

    /// Marks the export cancelled, aborts its readers, and cancels its run's
    /// query when no other export needs it.
    @discardableResult
    func applyCancel(_ job: ExportJob) -> DeleteOutcome {
        guard job.markCancelled() else { return .cancelled(job) }
        let run = job.run
        let lastOne = self.state.withLock { $0.removeMember(job) }
        self.logger.info("export cancelled", metadata: [LogKey.exportID: "\(job.id.uuidString.lowercased())", LogKey.runID: "\(run.id.uuidString.lowercased())"])
        // The query is cancelled only when no export needs it any more.
        if lastOne { self.cancel(run) }
        return .cancelled(job)
    }

    /// Removes an ended export, and its run's files unless another export or
    /// the fresh cache entry for its request needs them.
    private func applyDelete(_ job: ExportJob) -> DeleteOutcome {
        let run = job.run
        let removals = self.state.withLock { state -> [String]? in
            guard state.jobs[job.id] != nil else { return nil }
            let fresh = state.latest[run.request.cacheKey] === run && self.isJoinable(run, state: state)
            return state.leave(job, keepingRun: fresh)
        }
        guard let removals else { return .notFound }
        self.remove(removals)
        return .deleted
    }

    /// Cancels a run no export needs any more.
    func cancel(_ run: ExportRun) {
        let (action, cancellers) = run.cancel()
        if case .alreadyEnded = action { return }
        self.state.withLock { state in
            if action == .removeFromQueue { _ = state.scheduler.removeQueued(run.id) }
            state.unlist(run)
        }
        self.cancelQueries(cancellers)
    }

    /// `PQcancel` opens a connection to the server and waits for it: never on
    /// the caller's executor, and on a pool of its own (it has no timeout).
    private func cancelQueries(_ cancellers: [PostgresCanceller]) {
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

    /// The gzip form of an export's CSV, made once per run whoever asks
    /// first. Nil when there is none yet and none may start: `start` is false
    /// (a HEAD request never starts a compressor), the server is stopping, or
    /// GZIP_WORKERS + GZIP_QUEUE forms are being made already (the caller
    /// sends the CSV uncompressed instead).
    func gzipFile(for job: ExportJob, start: Bool) -> GrowingFile? {
        let run = job.run
        let shared: SharedFile?
        if start {
            shared = run.gzipFile(admit: { self.admitGzip() }) { target in
                if case .terminated = self.gzipRequestSink.yield((run, target)) {
                    target.fail(.failed("the server is shutting down"))
                    self.state.withLock { $0.gzipAdmitted -= 1 }
                }
            }
        } else {
            shared = run.existingGzip
        }
        return shared.map { job.view(of: $0) }
    }

    /// True when a new gzip form could start now (what a HEAD answers as).
    var couldStartGzip: Bool {
        self.state.withLock { self.hasGzipRoom($0) }
    }

    /// Counts one more gzip form in the making, if the bound allows. Takes
    /// only the manager's lock (see `ExportRun.gzipFile`).
    private func admitGzip() -> Bool {
        self.state.withLock { state in
            guard self.hasGzipRoom(state) else { return false }
            state.gzipAdmitted += 1
            return true
        }
    }

    /// GZIP_WORKERS + GZIP_QUEUE forms are not all taken, and no shutdown has begun.
    private func hasGzipRoom(_ state: State) -> Bool {
        !state.shuttingDown && state.gzipAdmitted < self.limits.gzipWorkers + self.limits.gzipQueue
    }

    /// Makes one run's gzip form once a compressor is free, and adopts it.
    private func produceGzip(of run: ExportRun, into target: SharedFile) async {
        defer { self.state.withLock { $0.gzipAdmitted -= 1 } }
        do {
            try await self.compressors.acquire()
        } catch {
            target.fail(.failed("the server is shutting down"))
            return
        }
        defer { self.compressors.release() }
        let producer = UUID()
        let storage = GzipProducer.Storage(
            reserve: { self.reserve($0, for: producer, writing: run) },
            install: { sealed in try await self.onFilesPool { try $0.install(sealed, holder: run, producer: producer) } },
            discarded: { self.endPartial(producer) }
        )
        guard let published = await self.gzipProducer.run(source: run.csv.primary, target: target, storage: storage) else { return }
        Telemetry.gzipFormsMade.increment()
        do {
            try await self.onDatabasePool { try $0.journal.recordGzip(published, of: run) }
        } catch {
            // Not an acknowledgement: after a restart the form is made again.
            self.logger.notice("gzip form not journaled", metadata: [LogKey.runID: "\(run.id.uuidString.lowercased())"])
        }
    }

    // MARK: Workers

    /// Runs `run` on an export worker; when it ends, starts the next queued
    /// run. A stopped pool runs the closure at once with `.cancelled`: then
    /// the queue is drained in a loop (each run interrupted), not by recursion.
    func dispatch(_ run: ExportRun) {
        self.workers.submit { workItemState in
            let active = workItemState == .active
            var next = self.runOnWorker(run, active: active)
            if active {
                if let next {
                    self.dispatch(next)
                } else if !self.isShuttingDown {
                    // Nothing waits: this idle thread replaces the connections a
                    // cancel or a failure closed, so the next export finds them.
                    self.exportConnections.warm(self.limits.parallelism)
                }
                return
            }
            while let queued = next { next = self.runOnWorker(queued, active: false) }
        }
    }

    /// Runs one export on the calling worker thread and settles its end;
    /// returns the queued run to start next, if any.
    private func runOnWorker(_ run: ExportRun, active: Bool) -> ExportRun? {
        let outcome: ExportRunner.Outcome
        if active {
            let pieceWorkers = self.pieceWorkers
            outcome = self.runner.run(run, storage: ExportRunner.Storage(
                reserve: { self.reserve($0, for: run.id, writing: run) },
                install: { sealed in try self.pools.files.runAndWait { try self.install(sealed, holder: run, producer: run.id) } },
                discarded: { self.endPartial(run.id) },
                reserveSpool: { piece, bytes in self.reserve(bytes, for: piece, writing: run) },
                endSpool: { piece in self.endPartial(piece) },
                adoptSpool: { piece, bytes in self.transferReservation(bytes, from: piece, to: run.id) },
                startPiece: { body in
                    // No piece threads (EXPORT_PARALLELISM=1): the runner asks for none.
                    guard let pieceWorkers else { return body(false) }
                    pieceWorkers.submit { body($0 == .active) }
                },
                runningExports: { self.state.withLock { $0.scheduler.running.count } }
            ))
        } else {
            // The pool is stopping: the run stays queued in the journal.
            _ = run.interrupt()
            outcome = .interrupted
        }
        let (removals, next) = self.state.withLock { state -> ([String], ExportRun?) in
            var removals: [String] = []
            switch outcome {
            case .completed:
                break
            case .publishedAfterCancel:
                // Cancelled while publishing: the file goes unless another run holds it.
                if state.members[run.id]?.isEmpty ?? true { removals = state.forget(run) }
            case .failed, .cancelled, .interrupted:
                state.unlist(run)
            }
            let next = state.scheduler.finished(run.id).flatMap { state.runs[$0] }
            return (removals, state.shuttingDown ? nil : next)
        }
        self.remove(removals)
        return next
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

/// An export past EXPORT_TTL, remembered for 410 answers to its owner.
struct ExpiredExport: Sendable {
    let at: Date
    let owner: String?
}

extension ExportManager.State {
    /// Takes an export off its run's members. True when it was the last: the
    /// run is then unlisted in the same step, so that no request can join a
    /// run whose query is about to be cancelled.
    mutating func removeMember(_ job: ExportJob) -> Bool {
        let run = job.run
        self.members[run.id]?.remove(job.id)
        guard self.members[run.id]?.isEmpty ?? true else { return false }
        self.unlist(run)
        return true
    }

    /// The run is no longer the one to join for its request.
    mutating func unlist(_ run: ExportRun) {
        if self.latest[run.request.cacheKey] === run { self.latest[run.request.cacheKey] = nil }
    }

    /// Takes an ended or expiring export off its run; when it was the run's
    /// last, the run is forgotten (unless `keepingRun`, as the fresh answer
    /// to its request). Returns the files no run holds any more.
    mutating func leave(_ job: ExportJob, keepingRun: Bool = false) -> [String] {
        let run = job.run
        self.jobs[job.id] = nil
        self.members[run.id]?.remove(job.id)
        guard self.members[run.id]?.isEmpty ?? true else { return [] }
        self.members[run.id] = nil
        return keepingRun ? [] : self.forget(run)
    }

    /// Drops a run that no export needs; returns the files no run holds any more.
    mutating func forget(_ run: ExportRun) -> [String] {
        guard self.runs[run.id] === run else { return [] }
        self.runs[run.id] = nil
        self.members[run.id] = nil
        self.lastUsed[run.id] = nil
        self.unlist(run)
        return (self.held.removeValue(forKey: run.id) ?? []).filter { self.ledger.release($0) }
    }
}
