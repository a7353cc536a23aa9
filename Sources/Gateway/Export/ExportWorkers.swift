import Cache
import Foundation
import Logging
import NIOPosix
import Synchronization

/// The export workers: MAX_CONCURRENT_EXPORTS threads that run the runs
/// this gateway claims (blocking libpq never touches an event loop or the
/// cooperative pool), the threads of their later pieces, the export
/// connections kept between exports, and the end of each run with the
/// shared queue (a failure journaled for as long as the lease holds, a run
/// handed back at shutdown). What the registry does when a run ends is the
/// manager's (`ExportManager.runEnded`).
///
/// Its own lock guards only its stopping flag (the count of runs is an
/// atomic, `RunCounter`); it is never held across I/O and takes no other lock.
final class ExportWorkers: Sendable {
    private struct State {
        /// A shutdown has begun: no run starts any more, and one that ends
        /// goes back to the queue rather than failing for good.
        var stopping = false
    }

    private let threads: NIOThreadPool
    /// `maxConcurrent × (parallelism − 1)` threads, so a piece never waits for one.
    private let pieceThreads: NIOThreadPool?
    private let connections: PostgresConnectionPool
    private let runner: ExportRunner
    private let journal: ExportJournal
    private let cluster: Configuration.Cluster
    private let parallelism: Int
    private let logger: Logger
    private let state = Mutex(State())
    /// Runs dispatched here and not yet settled with the queue: how many
    /// pieces a run may take, read when it decides (`ExportRunner`).
    private let running: RunCounter

    init(configuration: Configuration, store: ContentStore, journal: ExportJournal, logger: Logger) {
        let exports = configuration.exports
        self.threads = NIOThreadPool(numberOfThreads: exports.maxConcurrent)
        self.pieceThreads = exports.parallelism > 1 ? NIOThreadPool(numberOfThreads: exports.maxConcurrent * (exports.parallelism - 1)) : nil
        self.connections = PostgresConnectionPool(settings: configuration.database.settings, maxIdle: exports.maxConcurrent * exports.parallelism)
        self.running = RunCounter()
        var runner = ExportRunner(connections: self.connections, store: store, logger: logger, fastStart: exports.fastStart, parallelism: exports.parallelism, minRowsPerPiece: exports.minRowsPerPiece)
        runner.pieceThreads = self.pieceThreads
        runner.runningExports = self.running
        self.runner = runner
        self.journal = journal
        self.cluster = configuration.cluster
        self.parallelism = exports.parallelism
        self.logger = logger
    }

    /// Starts the threads: until then nothing runs.
    func start() {
        self.threads.start()
        self.pieceThreads?.start()
    }

    /// No run starts from now on (a shutdown has begun). Safe to call more than once.
    func beginStopping() {
        self.state.withLock { $0.stopping = true }
    }

    var isStopping: Bool { self.state.withLock { $0.stopping } }

    /// Stops the threads and closes the kept connections. Not awaited: a
    /// worker stuck in a database call that nothing can interrupt (the host
    /// vanished) must not hold the shutdown; it dies with the process. Every
    /// other worker has stopped by now (its run was interrupted, and a COPY
    /// looks for that every second).
    func stop() {
        self.threads.shutdownGracefully { _ in }
        self.pieceThreads?.shutdownGracefully { _ in }
        self.connections.closeAll()
    }

    /// Opens connections for the next export, so it does not pay for them
    /// (10 ms each). Blocking: on a thread pool.
    func warmConnections() {
        self.connections.warm(self.parallelism)
    }

    /// Closes kept connections idle for a minute. Blocking: on a thread pool.
    func closeStaleConnections() {
        self.connections.closeStale()
    }

    /// Runs a claimed run on a worker thread, settles its end with the
    /// shared queue (fenced by the claim: a run this gateway lost to another
    /// changes nothing there), then calls `ended` on that thread. A stopped
    /// pool runs this at once with `.cancelled`: the run is then interrupted
    /// and goes back to the queue.
    func dispatch(_ run: ExportRun, attempt: Int, storage: some ExportStorage, ended: @escaping @Sendable (ExportRunner.Outcome) -> Void) {
        self.running.increment()
        self.threads.submit { workItemState in
            // Claimed as a shutdown began (an admission under way): not run,
            // but handed back to the queue like the runs it interrupted.
            let active = workItemState == .active && !self.isStopping
            let outcome: ExportRunner.Outcome
            if active {
                outcome = self.runner.run(run, storage: storage)
            } else {
                _ = run.interrupt()
                outcome = .interrupted
            }
            self.settle(run, attempt: attempt, outcome: outcome, ranHere: active)
            // Counted until settled, as a claim is: a failure retried for
            // the lease still holds its share.
            self.running.decrement()
            ended(outcome)
            guard active, !self.isStopping else { return }
            // This idle thread replaces the connections a cancel or a
            // failure closed, so the next export finds them.
            self.warmConnections()
        }
    }

    /// The backends of the kept connections (what tests freeze).
    var idleBackendPIDs: [Int32] { self.connections.idleBackendPIDs }

    /// Tells the shared queue how a run claimed here ended, when the
    /// publish has not (a completion is journaled with the file's rename).
    private func settle(_ run: ExportRun, attempt: Int, outcome: ExportRunner.Outcome, ranHere: Bool) {
        let stopping = self.isStopping
        let instance = self.cluster.instanceID
        switch outcome {
        case .failed where stopping:
            // Most likely failed by the shutdown itself (its thread pools
            // stopping): handed back to the queue rather than failed for good.
            try? self.journal.release(run.id, attempt: attempt, instance: instance)
            _ = run.interrupt()
        case .failed(let message):
            // Failed here only once the shared queue records it for this
            // attempt: a gateway frozen past its lease fails for that
            // (its connections timed out) while another attempt runs, and
            // its readers must see an abort, not a failure. Tried for as
            // long as the lease holds (a database restart is what often
            // fails an export): then the failure stands on every gateway.
            // Past the lease another gateway runs it again, and this one's
            // status follows that.
            let deadline = ContinuousClock.now + .seconds(self.cluster.leaseSeconds)
            while true {
                do {
                    if try self.journal.fail(run.id, attempt: attempt, instance: instance, message: message) {
                        run.fail(message: message)
                    } else {
                        _ = run.interrupt(reason: "another gateway runs this export now")
                    }
                    break
                } catch {
                    guard ContinuousClock.now < deadline, !self.isStopping else {
                        self.logger.warning("the run's failure was not journaled; its lease runs out and another attempt follows", metadata: [LogKey.runID: "\(run.id.uuidString.lowercased())"])
                        _ = run.interrupt(reason: "the gateway lost its database; the export runs again")
                        break
                    }
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
        case .interrupted where stopping || !ranHere:
            // Back to the queue for another gateway; if this fails, the lease runs out instead.
            try? self.journal.release(run.id, attempt: attempt, instance: instance)
        case .completed, .publishedAfterCancel, .cancelled, .interrupted:
            break
        }
    }
}

/// How many runs this gateway runs now (dispatched, not yet settled), read
/// by a run when it decides how many pieces to take.
final class RunCounter: Sendable {
    private let value = Atomic<Int>(0)

    func increment() { self.value.add(1, ordering: .relaxed) }

    func decrement() { self.value.subtract(1, ordering: .relaxed) }

    /// At least 1: the run asking counts itself.
    var current: Int { max(1, self.value.load(ordering: .relaxed)) }
}
