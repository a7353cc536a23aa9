import Cache
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Owns every export: admits them through the scheduler, runs them on a pool
/// of `maxConcurrentExports` threads of its own (blocking libpq never touches
/// an event loop or the cooperative pool), cancels and deletes them, and keeps
/// count of which exports refer to each finished file.
///
/// A `Service`: on graceful shutdown it cancels what is queued or running, so
/// no partial file outlives the process and the threads stop.
final class ExportManager: Service, Sendable {
    enum SubmitError: Error {
        case queueFull
    }

    enum DeleteOutcome {
        case cancelled(ExportJob)
        case deleted
        case notFound
    }

    fileprivate struct State {
        var scheduler: ExportScheduler
        var jobs: [UUID: ExportJob] = [:]
        /// How many completed exports name each published file.
        var references: [String: Int] = [:]
        var shuttingDown = false
    }

    let store: ContentStore
    private let runner: ExportRunner
    private let gzipProducer: GzipProducer
    /// Exports whose gzip form a reader asked for; `run` starts one producer each.
    private let gzipRequests: AsyncStream<(ExportJob, GrowingFile)>
    private let gzipRequestSink: AsyncStream<(ExportJob, GrowingFile)>.Continuation
    private let workers: NIOThreadPool
    private let state: Mutex<State>
    private let logger: Logger

    init(configuration: Configuration, store: ContentStore, logger: Logger) {
        self.store = store
        self.logger = logger
        self.runner = ExportRunner(databaseURL: configuration.database.url, store: store, logger: logger)
        self.gzipProducer = GzipProducer(store: store, level: Int32(configuration.exports.gzipLevel), logger: logger)
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
            }
            for await (job, target) in self.gzipRequests {
                group.addTask {
                    guard let published = await self.gzipProducer.run(source: job.file, target: target) else { return }
                    let orphan = self.state.withLock { state -> String? in
                        guard state.jobs[job.id] == nil else {
                            state.references[published.path, default: 0] += 1
                            return nil
                        }
                        // Deleted while compressing: keep the file only if another export has it.
                        return state.references[published.path] == nil ? published.path : nil
                    }
                    if let orphan { self.store.removeObject(atPath: orphan) }
                }
            }
            // The stream ends at shutdown: stop the producers still compressing.
            group.cancelAll()
        }
        try await self.workers.shutdownGracefully()
    }

    private func stopAll() {
        let active = self.state.withLock { state in
            state.shuttingDown = true
            return state.jobs.values.filter { $0.status == .queued || $0.status == .running }
        }
        for job in active { _ = self.delete(job.id) }
        self.gzipRequestSink.finish()
    }

    /// The gzip form of an export's CSV, made once whoever asks first.
    func gzipFile(for job: ExportJob) -> GrowingFile {
        job.gzipFile { target in
            if case .terminated = self.gzipRequestSink.yield((job, target)) {
                target.fail(.failed("the server is shutting down"))
            }
        }
    }

    /// Admits a new export: it starts now, or waits its turn, or is refused
    /// when the queue is full (or the server is stopping).
    func submit(_ request: ExportRequest) throws(SubmitError) -> ExportJob {
        let job = ExportJob(request: request)
        let admission = self.state.withLock { state -> ExportScheduler.Admission in
            guard !state.shuttingDown else { return .rejected }
            let admission = state.scheduler.submit(job.id)
            if admission != .rejected { state.jobs[job.id] = job }
            return admission
        }
        switch admission {
        case .rejected: throw .queueFull
        case .start: self.dispatch(job)
        case .queued: break
        }
        return job
    }

    func job(_ id: UUID) -> ExportJob? {
        self.state.withLock { $0.jobs[id] }
    }

    /// Cancels a queued or running export (it stays, as `cancelled`), or
    /// deletes an ended one and its file when no other export refers to it.
    func delete(_ id: UUID) -> DeleteOutcome {
        guard let job = self.job(id) else { return .notFound }
        switch job.cancel() {
        case .removeFromQueue:
            self.state.withLock { _ = $0.scheduler.removeQueued(id) }
            self.logger.info("export cancelled while queued", metadata: [LogKey.exportID: "\(id.uuidString.lowercased())"])
            return .cancelled(job)
        case .stopWorker:
            return .cancelled(job)
        case .alreadyEnded(let status):
            if status == .cancelled { return .cancelled(job) }
            let orphans = self.state.withLock { state -> [String] in
                state.jobs[id] = nil
                return [job.publishedFile, job.publishedGzip].compactMap { $0.flatMap { state.release($0.path) } }
            }
            for orphan in orphans { self.store.removeObject(atPath: orphan) }
            return .deleted
        }
    }

    private func dispatch(_ job: ExportJob) {
        self.workers.submit { [self] workItemState in
            // The pool cancels work only when it is shutting down.
            let outcome = workItemState == .active ? self.runner.run(job) : .cancelled
            let (orphan, next) = self.state.withLock { state -> (String?, ExportJob?) in
                var orphan: String?
                switch outcome {
                case .completed(let file):
                    state.references[file.path, default: 0] += 1
                case .publishedAfterCancel(let file):
                    // Cancelled while publishing: keep the file only if another export has it.
                    orphan = state.references[file.path] == nil ? file.path : nil
                case .failed, .cancelled:
                    break
                }
                let next = state.scheduler.finished(job.id).flatMap { state.jobs[$0] }
                return (orphan, next)
            }
            if let orphan { self.store.removeObject(atPath: orphan) }
            if let next { self.dispatch(next) }
        }
    }
}

extension ExportManager.State {
    /// Drops one reference to a file; returns its path when none is left.
    fileprivate mutating func release(_ path: String) -> String? {
        guard let count = self.references[path] else { return nil }
        if count > 1 {
            self.references[path] = count - 1
            return nil
        }
        self.references[path] = nil
        return path
    }
}
