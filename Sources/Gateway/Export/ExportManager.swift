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
/// them, and counts which runs hold each finished file.
///
/// A `Service`: it runs the gzip producers, and on graceful shutdown cancels
/// what is queued or running, so no partial file outlives the process.
final class ExportManager: Service, Sendable {
    enum SubmitError: Error {
        case queueFull
        /// CACHE_MAX_BYTES is reached and nothing can be evicted.
        case cacheFull
    }

    enum Lookup {
        case found(ExportJob)
        /// It existed, and EXPORT_TTL has passed since it was asked for.
        case expired
        case notFound
    }

    enum DeleteOutcome {
        case cancelled(ExportJob)
        case deleted
        case notFound
    }

    fileprivate struct State {
        var scheduler: ExportScheduler
        var jobs: [UUID: ExportJob] = [:]
        var runs: [UUID: ExportRun] = [:]
        /// The exports of each run that have not been cancelled or deleted.
        var members: [UUID: Set<UUID>] = [:]
        /// The run to join for a canonical request: running, queued, or
        /// completed less than `cacheTTL` ago.
        var latest: [String: ExportRun] = [:]
        /// How many completed runs hold each published file (CSV or gzip).
        var references: [String: Int] = [:]
        /// When each run was last asked for (joined or downloaded): the LRU order of eviction.
        var lastUsed: [UUID: Date] = [:]
        /// Exports past EXPORT_TTL, and when they expired: answered 410
        /// rather than 404 for another EXPORT_TTL, then forgotten (as the journal does).
        var expired: [UUID: Date] = [:]
        var shuttingDown = false
    }

    let store: ContentStore
    let journal: ExportJournal
    private let runner: ExportRunner
    private let gzipProducer: GzipProducer
    private let cacheTTL: Duration
    private let exportTTL: TimeInterval
    /// 0: no bound.
    private let cacheMaxBytes: Int
    /// Runs whose gzip form a reader asked for; `run` starts one producer each.
    private let gzipRequests: AsyncStream<(ExportRun, SharedFile)>
    private let gzipRequestSink: AsyncStream<(ExportRun, SharedFile)>.Continuation
    private let workers: NIOThreadPool
    private let state: Mutex<State>
    private let logger: Logger
    /// For the journal's blocking writes from async callers.
    private let threadPool: NIOThreadPool = .singleton

    init(configuration: Configuration, store: ContentStore, journal: ExportJournal, logger: Logger) {
        self.store = store
        self.journal = journal
        self.logger = logger
        self.runner = ExportRunner(databaseURL: configuration.database.url, store: store, journal: journal, logger: logger, fastStart: configuration.exports.fastStart)
        self.gzipProducer = GzipProducer(store: store, level: Int32(configuration.exports.gzipLevel), logger: logger)
        self.cacheTTL = .seconds(configuration.exports.cacheTTLSeconds)
        self.exportTTL = TimeInterval(configuration.exports.exportTTLSeconds)
        self.cacheMaxBytes = configuration.exports.cacheMaxBytes
        (self.gzipRequests, self.gzipRequestSink) = AsyncStream.makeStream()
        self.workers = NIOThreadPool(numberOfThreads: configuration.exports.maxConcurrent)
        self.workers.start()
        self.state = Mutex(State(scheduler: ExportScheduler(maxRunning: configuration.exports.maxConcurrent, maxQueued: configuration.exports.maxQueued)))
    }

    /// Runs the gzip producers until shutdown; then cancels what is queued or
    /// running (their partial files go) and stops the worker threads.
    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Returns on graceful shutdown, throws when cancelled: both end it.
                try? await gracefulShutdown()
                self.stopAll()
                // Only now may `run` end: ending before the service group asks
                // counts as a failure, even when a download stopped the exports earlier.
                self.gzipRequestSink.finish()
            }
            group.addTask {
                // The janitor: ends with the group's cancellation at shutdown.
                while (try? await Task.sleep(for: self.sweepInterval)) != nil {
                    await self.sweep()
                }
            }
            for await (run, target) in self.gzipRequests {
                group.addTask {
                    let reserve: @Sendable (Int) -> Bool = { self.makeRoom(for: $0, writing: run) }
                    guard let published = await self.gzipProducer.run(source: run.csv.primary, target: target, reserve: reserve) else { return }
                    await self.adopt(published, of: run)
                }
            }
            // The stream ends at shutdown: stop the producers still compressing.
            group.cancelAll()
        }
        try await self.workers.shutdownGracefully()
    }

    /// A journal write from an async caller: it blocks, so it runs on the
    /// thread pool. (The journal logs its own failures.)
    private func journaling(_ write: @escaping @Sendable (ExportJournal) -> Void) async {
        let journal = self.journal
        try? await self.threadPool.runIfActive { write(journal) }
    }

    /// True once shutdown has begun: downloads stop between chunks.
    var isShuttingDown: Bool { self.state.withLock { $0.shuttingDown } }

    /// Cancels what is queued or running and stops taking new work. Called
    /// when graceful shutdown begins, by this service or, earlier, by a
    /// download in progress (the server waits for its requests before this
    /// service hears of the shutdown). Safe to call more than once.
    func stopAll() {
        let active = self.state.withLock { state in
            state.shuttingDown = true
            return state.runs.values.filter { $0.status == .queued || $0.status == .running }
        }
        // Nothing is journaled here: what was queued or running is queued
        // again when the gateway starts next.
        for run in active { self.cancel(run) }
    }

    /// Admits a new export. It joins the run of an identical request that is
    /// queued, running or fresh (unless `fresh` asks for a new run);
    /// otherwise a new run starts now, or waits its turn, or is refused when
    /// the queue is full (or the server is stopping).
    func submit(_ request: ExportRequest, fresh: Bool = false) async throws(SubmitError) -> ExportJob {
        let key = request.cacheKey
        // Join first: making room could evict the very file this request would reuse.
        var joined = fresh ? nil : self.state.withLock { self.join(key, state: &$0) }
        var admission: ExportScheduler.Admission?
        if joined == nil {
            // A new run needs room for at least its first write.
            let hasRoom = self.makeRoom(for: ExportRunner.stagingSize, writing: nil)
            (joined, admission) = self.state.withLock { state -> (ExportJob?, ExportScheduler.Admission?) in
                guard !state.shuttingDown else { return (nil, .rejected) }
                // An identical request may have started a run meanwhile.
                if !fresh, let job = self.join(key, state: &state) { return (job, nil) }
                guard hasRoom else { return (nil, nil) }
                let run = ExportRun(request: request)
                let admission = state.scheduler.submit(run.id)
                guard admission != .rejected else { return (nil, .rejected) }
                let job = ExportJob(run: run)
                state.runs[run.id] = run
                state.latest[key] = run
                state.lastUsed[run.id] = Date()
                state.jobs[job.id] = job
                state.members[run.id] = [job.id]
                return (job, admission)
            }
        }
        guard let job = joined else { throw admission == nil ? .cacheFull : .queueFull }
        // Journaled before the client hears of it, so the id survives a crash.
        await self.journaling { $0.insert(job) }
        if admission == .start { self.dispatch(job.run) }
        return job
    }

    /// A new export of the run that answers `key`, if one may be joined.
    private func join(_ key: String, state: inout State) -> ExportJob? {
        guard !state.shuttingDown, let run = state.latest[key], self.isJoinable(run, state: state) else { return nil }
        state.lastUsed[run.id] = Date()
        let job = ExportJob(run: run)
        state.jobs[job.id] = job
        state.members[run.id, default: []].insert(job.id)
        return job
    }

    /// A run another export may join: not ended badly, and if completed,
    /// completed within `cacheTTL` and still holding its file.
    private func isJoinable(_ run: ExportRun, state: State) -> Bool {
        switch run.status {
        case .queued, .running:
            return true
        case .completed:
            guard let completedAt = run.completedAt, let file = run.publishedFile else { return false }
            return Date().timeIntervalSince(completedAt) < Double(self.cacheTTL.components.seconds) && state.references[file.path] != nil
        case .failed, .cancelled:
            return false
        }
    }

    func job(_ id: UUID) -> ExportJob? {
        self.state.withLock { $0.jobs[id] }
    }

    /// Finds an export for a client: expired ones (past EXPORT_TTL) are
    /// removed on the spot and answered as such; a found one counts as a use
    /// of its run for eviction.
    func lookup(_ id: UUID) async -> Lookup {
        let (job, expired) = self.state.withLock { ($0.jobs[id], $0.expired[id] != nil) }
        if expired { return .expired }
        guard let job else { return .notFound }
        if Date().timeIntervalSince(job.createdAt) >= self.exportTTL {
            await self.expire([job])
            return .expired
        }
        self.state.withLock { $0.lastUsed[job.run.id] = Date() }
        return .found(job)
    }

    /// How often the janitor looks for expired exports and stale files.
    private var sweepInterval: Duration {
        .seconds(max(1, min(60, min(self.exportTTL, Double(self.cacheTTL.components.seconds)) / 4)))
    }

    /// The janitor's round: expires exports past EXPORT_TTL, drops runs no
    /// export needs once CACHE_TTL has passed (their files go), and evicts
    /// while the cache is over CACHE_MAX_BYTES.
    func sweep() async {
        let now = Date()
        let old = self.state.withLock { state in state.jobs.values.filter { now.timeIntervalSince($0.createdAt) >= self.exportTTL } }
        if !old.isEmpty { await self.expire(old) }
        let orphans = self.state.withLock { state -> [String] in
            state.expired = state.expired.filter { now.timeIntervalSince($0.value) < self.exportTTL }
            let stale = state.runs.values.filter { run in
                (state.members[run.id]?.isEmpty ?? true) && run.status != .queued && run.status != .running && !self.isJoinable(run, state: state)
            }
            return stale.flatMap { state.forget($0) }
        }
        for orphan in orphans { self.store.removeObject(atPath: orphan) }
        _ = self.makeRoom(for: 0, writing: nil)
        let keep = Int(self.exportTTL)
        await self.journaling { $0.forgetExpired(after: keep) }
    }

    /// Removes exports past EXPORT_TTL (cancelling them if they still run),
    /// remembers their ids for 410, and journals it.
    private func expire(_ jobs: [ExportJob]) async {
        for job in jobs {
            if job.run.status == .queued || job.run.status == .running { _ = self.cancelOrDelete(job.id) }
            let orphans = self.state.withLock { state -> [String] in
                guard state.jobs[job.id] != nil else { return [] }
                state.expired[job.id] = Date()
                return state.leave(job)
            }
            for orphan in orphans { self.store.removeObject(atPath: orphan) }
        }
        let ids = jobs.map(\.id)
        await self.journaling { $0.markExpired(ids) }
        self.logger.info("exports expired", metadata: ["gateway.exports.expired": "\(jobs.count)"])
    }

    /// Makes room for `incoming` more bytes under CACHE_MAX_BYTES, evicting
    /// the least recently used finished runs that no export needs (never
    /// `writing`, the run asking); false when even that is not enough.
    /// Readers of an evicted file keep reading it: they opened it before.
    func makeRoom(for incoming: Int, writing: ExportRun?) -> Bool {
        guard self.cacheMaxBytes > 0 else { return true }
        let (fits, orphans) = self.state.withLock { state -> (Bool, [String]) in
            var used = state.diskBytes()
            guard used + incoming > self.cacheMaxBytes else { return (true, []) }
            let evictable = state.runs.values
                .filter { run in run !== writing && (state.members[run.id]?.isEmpty ?? true) && run.status == .completed }
                .sorted { (state.lastUsed[$0.id] ?? .distantPast) < (state.lastUsed[$1.id] ?? .distantPast) }
            var orphans: [String] = []
            for run in evictable where used + incoming > self.cacheMaxBytes {
                orphans += state.forget(run)
                used = state.diskBytes()
            }
            return (used + incoming <= self.cacheMaxBytes, orphans)
        }
        for orphan in orphans { self.store.removeObject(atPath: orphan) }
        if !orphans.isEmpty { self.logger.info("evicted cache files", metadata: ["gateway.cache.evicted": "\(orphans.count)"]) }
        return fits
    }

    /// Cancels a queued or running export (it stays, as `cancelled`; its run
    /// goes on while another export needs it), or deletes an ended one, and
    /// its run's files once no export and no fresh cache entry needs them.
    func delete(_ id: UUID) async -> DeleteOutcome {
        let outcome = self.cancelOrDelete(id)
        switch outcome {
        case .cancelled(let job): await self.journaling { $0.markCancelled(job) }
        case .deleted: await self.journaling { $0.delete(id) }
        case .notFound: break
        }
        return outcome
    }

    private func cancelOrDelete(_ id: UUID) -> DeleteOutcome {
        guard let job = self.job(id) else { return .notFound }
        if job.isCancelled { return .cancelled(job) }
        let run = job.run
        switch run.status {
        case .queued, .running:
            guard job.markCancelled() else { return .cancelled(job) }
            let lastOne = self.state.withLock { state -> Bool in
                state.members[run.id]?.remove(job.id)
                return state.members[run.id]?.isEmpty ?? true
            }
            self.logger.info("export cancelled", metadata: [LogKey.exportID: "\(id.uuidString.lowercased())", LogKey.runID: "\(run.id.uuidString.lowercased())"])
            // The query is cancelled only when no export needs it any more.
            if lastOne { self.cancel(run) }
            return .cancelled(job)
        case .completed, .failed, .cancelled:
            let orphans = self.state.withLock { state -> [String] in
                // No export left: the run and its files go, unless it is the fresh entry for its request.
                let fresh = state.latest[run.request.cacheKey] === run && self.isJoinable(run, state: state)
                return state.leave(job, keepingRun: fresh)
            }
            for orphan in orphans { self.store.removeObject(atPath: orphan) }
            return .deleted
        }
    }

    /// The gzip form of an export's CSV, made once per run whoever asks first.
    func gzipFile(for job: ExportJob) -> GrowingFile {
        let run = job.run
        let shared = run.gzipFile { target in
            if self.isShuttingDown {
                target.fail(.failed("the server is shutting down"))
            } else if case .terminated = self.gzipRequestSink.yield((run, target)) {
                target.fail(.failed("the server is shutting down"))
            }
        }
        return job.view(of: shared)
    }

    private func cancel(_ run: ExportRun) {
        let action = run.cancel()
        if case .alreadyEnded = action { return }
        self.state.withLock { state in
            if action == .removeFromQueue { _ = state.scheduler.removeQueued(run.id) }
            state.unlist(run)
        }
    }

    /// A gzip form was published: the run holds it, unless no export is left.
    private func adopt(_ published: PublishedFile, of run: ExportRun) async {
        let orphan = self.state.withLock { state -> String? in
            guard state.runs[run.id] != nil else {
                return state.references[published.path] == nil ? published.path : nil
            }
            state.references[published.path, default: 0] += 1
            return nil
        }
        if let orphan {
            self.store.removeObject(atPath: orphan)
        } else {
            await self.journaling { $0.recordGzip(published, of: run) }
        }
    }

    /// Brings back the exports of the journal after a restart: finished ones
    /// whose file is on disk as they were, failed and cancelled ones as
    /// such, and the rest (queued, running, or finished with the file gone)
    /// queued again under the same ids. Then removes every file in the cache
    /// that no export refers to. Blocking (file checks); call it before serving.
    func restore(_ records: [ExportJournal.Record]) -> (restored: Int, requeued: Int) {
        var requeue: [ExportRun] = []
        var restored = 0
        for (runID, rows) in Dictionary(grouping: records, by: \.runID) {
            guard let request = try? ExportRequest.parse(try QueryString.parse(rows[0].query)) else {
                self.logger.warning("journal row with an unreadable request skipped", metadata: [LogKey.runID: "\(runID)"])
                continue
            }
            let now = Date()
            let isExpired: (ExportJournal.Record) -> Bool = { $0.expiredAt != nil || now.timeIntervalSince($0.createdAt) >= self.exportTTL }
            self.state.withLock { state in
                for row in rows where isExpired(row) { state.expired[row.id] = row.expiredAt ?? now }
            }
            self.journal.markExpired(rows.filter { $0.expiredAt == nil && isExpired($0) }.map(\.id))
            let rows = rows.filter { !isExpired($0) }
            guard !rows.isEmpty else { continue }
            let live = rows.filter { $0.cancelledAt == nil }
            let run: ExportRun
            if let done = live.first(where: { $0.status == .completed }), let file = self.onDisk(done.sha256, done.sizeBytes, suffix: ".csv") {
                let gzip = self.onDisk(done.gzipSha256, done.gzipSizeBytes, suffix: ".csv.gz")
                let lifecycle = ExportLifecycle(status: .completed, startedAt: done.startedAt, completedAt: done.completedAt, file: file, errorMessage: nil)
                run = ExportRun(id: runID, request: request, ended: lifecycle, rows: done.rows ?? 0, gzip: gzip)
            } else if live.contains(where: { $0.status != .failed }) {
                run = ExportRun(id: runID, request: request)
                requeue.append(run)
            } else {
                let failed = live.first
                let status: ExportLifecycle.Status = failed == nil ? .cancelled : .failed
                let lifecycle = ExportLifecycle(status: status, startedAt: failed?.startedAt, completedAt: failed?.completedAt ?? rows[0].cancelledAt, file: nil, errorMessage: failed?.error)
                run = ExportRun(id: runID, request: request, ended: lifecycle, rows: 0, gzip: nil)
            }
            self.state.withLock { state in
                state.runs[run.id] = run
                state.lastUsed[run.id] = run.completedAt ?? now
                state.members[run.id] = Set(live.map(\.id))
                for row in rows {
                    state.jobs[row.id] = ExportJob(id: row.id, run: run, createdAt: row.createdAt, cancelledAt: row.cancelledAt)
                }
                for file in [run.publishedFile, run.publishedGzip].compactMap({ $0 }) {
                    state.references[file.path, default: 0] += 1
                }
                if run.status == .queued || self.isJoinable(run, state: state) { state.latest[request.cacheKey] = run }
            }
            restored += rows.count
        }
        for run in requeue.sorted(by: { $0.id.uuidString < $1.id.uuidString }) {
            let admission = self.state.withLock { $0.scheduler.readmit(run.id) }
            if admission == .start { self.dispatch(run) }
        }
        let referenced = self.state.withLock { Set($0.references.keys) }
        let objects = (try? FileManager.default.contentsOfDirectory(atPath: self.store.objectsDirectory)) ?? []
        for name in objects where !referenced.contains(self.store.objectsDirectory + "/" + name) {
            self.store.removeObject(atPath: self.store.objectsDirectory + "/" + name)
        }
        return (restored, requeue.count)
    }

    /// The published file with this hash and size, if it is still in the cache.
    private func onDisk(_ sha256: String?, _ size: Int?, suffix: String) -> PublishedFile? {
        guard let sha256, let size, sha256.count == 64, sha256.allSatisfy(\.isHexDigit) else { return nil }
        let path = self.store.objectPath(sha256: sha256, suffix: suffix)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path), (attributes[.size] as? Int) == size else { return nil }
        return PublishedFile(path: path, size: size, sha256: sha256)
    }

    private func dispatch(_ run: ExportRun) {
        self.workers.submit { [self] workItemState in
            // The pool cancels work only when it is shutting down.
            let outcome = workItemState == .active ? self.runner.run(run, reserve: { self.makeRoom(for: $0, writing: run) }) : .cancelled
            let (orphan, next) = self.state.withLock { state -> (String?, ExportRun?) in
                var orphan: String?
                switch outcome {
                case .completed(let file):
                    state.references[file.path, default: 0] += 1
                case .publishedAfterCancel(let file):
                    // Cancelled while publishing: keep the file only if another run has it.
                    orphan = state.references[file.path] == nil ? file.path : nil
                case .failed, .cancelled:
                    state.unlist(run)
                }
                let next = state.scheduler.finished(run.id).flatMap { state.runs[$0] }
                return (orphan, next)
            }
            if let orphan { self.store.removeObject(atPath: orphan) }
            if let next { self.dispatch(next) }
        }
    }
}

extension ExportManager.State {
    /// The run is no longer the one to join for its request.
    fileprivate mutating func unlist(_ run: ExportRun) {
        if self.latest[run.request.cacheKey] === run { self.latest[run.request.cacheKey] = nil }
    }

    /// Takes an ended or expiring export off its run; when it was the run's
    /// last, the run is forgotten (unless `keepingRun`, as the fresh answer
    /// to its request). Returns the files no run holds any more.
    fileprivate mutating func leave(_ job: ExportJob, keepingRun: Bool = false) -> [String] {
        let run = job.run
        self.jobs[job.id] = nil
        self.members[run.id]?.remove(job.id)
        guard self.members[run.id]?.isEmpty ?? true else { return [] }
        self.members[run.id] = nil
        return keepingRun ? [] : self.forget(run)
    }

    /// Bytes on disk: every published file once, plus what running exports
    /// and gzip producers have written so far.
    fileprivate func diskBytes() -> Int {
        var published: [String: Int] = [:]
        var partial = 0
        for run in self.runs.values {
            let disk = run.diskUse()
            for file in disk.published { published[file.path] = file.size }
            partial += disk.partial
        }
        return published.values.reduce(partial, +)
    }

    /// Drops a run that no export needs; returns the files no run holds any more.
    fileprivate mutating func forget(_ run: ExportRun) -> [String] {
        self.runs[run.id] = nil
        self.members[run.id] = nil
        self.lastUsed[run.id] = nil
        self.unlist(run)
        return [run.publishedFile, run.publishedGzip].compactMap { file in
            guard let path = file?.path, let count = self.references[path] else { return nil }
            if count > 1 {
                self.references[path] = count - 1
                return nil
            }
            self.references[path] = nil
            return path
        }
    }
}
