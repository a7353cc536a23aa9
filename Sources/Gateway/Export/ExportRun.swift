import Cache
import Foundation
import Synchronization

/// One run of one query: its life, its progress, its CSV file and, once a
/// gzip reader asks, its gzip form. Every export with the same canonical
/// request that arrives while it runs, or while its result is fresh, shares
/// it (`ExportJob` is the per-export side). Shared by the HTTP handlers, the
/// manager, one worker and the gzip producer; all mutable state is under one lock.
final class ExportRun: Sendable {
    let id: UUID
    let request: ExportRequest
    /// `request.canonicalQuery`, made once: every status JSON carries it.
    let canonicalQuery: String
    let csv = SharedFile()

    private struct State {
        var lifecycle = ExportLifecycle()
        var rowsWritten = 0
        /// Records the later pieces of a parallel export have read into
        /// their spool files and that are not in the export's file yet.
        /// Below zero for a moment when the stitcher copies records before
        /// their reader has counted them (it sees bytes as soon as they are
        /// appended): a sum of both sides, clamped only where it is shown.
        var rowsSpooled = 0
        var bytesWritten = 0
        var totalRows: Int?
        var totalRowsExact = false
        /// One per connection reading for the run (several for a parallel export).
        var cancellers: [PostgresCanceller] = []
        /// COPYs that read the run (1 unless it was read in parallel).
        var pieces = 0
    }

    /// What a status shows of the run.
    struct Snapshot {
        let lifecycle: ExportLifecycle
        let rowsWritten: Int
        /// `rowsWritten` plus what parallel pieces have read and not yet
        /// handed over: what progress, rate and time left count, so the bar
        /// moves with every piece, not only with the first.
        let rowsRead: Int
        let bytesWritten: Int
        let totalRows: Int?
        let totalRowsExact: Bool
        let gzip: PublishedFile?
    }

    private let state = Mutex(State())
    /// The gzip form, made once by `GzipProducer` when a gzip reader first asks.
    private let gzip = Mutex<SharedFile?>(nil)

    init(id: UUID = UUID(), request: ExportRequest) {
        self.id = id
        self.request = request
        self.canonicalQuery = request.canonicalQuery
    }

    /// A run read back from the journal that had ended (completed, failed or
    /// cancelled); `gzip` is its gzip form if that was made and is still on disk.
    init(id: UUID, request: ExportRequest, ended lifecycle: ExportLifecycle, rows: Int, gzip: PublishedFile?) {
        self.id = id
        self.request = request
        self.canonicalQuery = request.canonicalQuery
        self.state.withLock { state in
            state.lifecycle = lifecycle
            state.rowsWritten = rows
            state.bytesWritten = lifecycle.file?.size ?? 0
            state.totalRows = lifecycle.file == nil ? nil : rows
            state.totalRowsExact = lifecycle.file != nil
        }
        switch lifecycle.status {
        case .completed: if let file = lifecycle.file { self.csv.complete(file) }
        case .failed: self.csv.fail(.failed(lifecycle.errorMessage ?? "the export failed"))
        default: self.csv.fail(.cancelled())
        }
        if let gzip {
            let shared = SharedFile()
            shared.complete(gzip)
            self.gzip.withLock { $0 = shared }
        }
    }

    var status: ExportLifecycle.Status { self.state.withLock { $0.lifecycle.status } }
    var publishedFile: PublishedFile? { self.state.withLock { $0.lifecycle.file } }
    var completedAt: Date? { self.state.withLock { $0.lifecycle.completedAt } }

    /// The gzip form of the CSV. The first caller makes it, if `admit` lets
    /// it (a bounded number are made at once), and `start` sets its production
    /// going; nil when there is none and `admit` said no. A form whose making
    /// failed (the cache was full, the disk, a shutdown) is made anew, so one
    /// failure does not fail every later gzip download. `admit` runs under
    /// this run's lock: it must be quick and take no other lock of the run.
    func gzipFile(admit: () -> Bool, start: (SharedFile) -> Void) -> SharedFile? {
        let (file, created) = self.gzip.withLock { gzip -> (SharedFile?, Bool) in
            if let gzip, !gzip.primary.hasFailed { return (gzip, false) }
            guard admit() else { return (nil, false) }
            let file = SharedFile()
            gzip = file
            return (file, true)
        }
        if created, let file { start(file) }
        return file
    }

    /// The gzip form if one was made or is being made; never starts one.
    var existingGzip: SharedFile? { self.gzip.withLock { $0 }.flatMap { $0.primary.hasFailed ? nil : $0 } }

    /// The finished gzip form, once there is one.
    var publishedGzip: PublishedFile? { self.gzip.withLock { $0 }?.primary.completedFile }

    /// Ends every export's view of this run's files (the CSV and the gzip form).
    func detach(_ exportID: UUID, with error: CacheError) {
        self.csv.detach(exportID, with: error)
        self.gzip.withLock { $0 }?.detach(exportID, with: error)
    }

    /// Queued → running; false if it was cancelled or interrupted while it waited.
    func markRunning(at start: Date = Date()) -> Bool {
        self.state.withLock { state in
            state.lifecycle.start(at: start)
        }
    }

    /// True once a shutdown has stopped it (see `ExportLifecycle.interrupt`).
    var isInterrupted: Bool { self.state.withLock { $0.lifecycle.interrupted } }

    /// True when the worker should stop: cancelled, or interrupted.
    var shouldStop: Bool { self.state.withLock { $0.lifecycle.status == .cancelled || $0.lifecycle.interrupted } }

    /// Lets `cancel` reach a query of the run. False if the run was
    /// cancelled or interrupted already, in which case the worker must stop.
    func attach(_ canceller: PostgresCanceller?) -> Bool {
        self.state.withLock { state in
            guard state.lifecycle.status == .running, !state.lifecycle.interrupted else { return false }
            if let canceller { state.cancellers.append(canceller) }
            return true
        }
    }

    /// Takes a connection's canceller back before the connection is kept
    /// for another export. False if a cancel or an interrupt may already
    /// hold it: then the connection must be closed, not kept, or that
    /// cancel could reach the next export's query.
    func detach(_ canceller: PostgresCanceller?) -> Bool {
        self.state.withLock { state in
            if let canceller { state.cancellers.removeAll { $0 === canceller } }
            return state.lifecycle.status == .running && !state.lifecycle.interrupted
        }
    }

    func setEstimate(rows: Int) {
        self.state.withLock { $0.totalRows = rows }
    }

    /// How many COPYs read it (`ExportPlan`): for the log and the tests.
    var pieces: Int {
        get { self.state.withLock { $0.pieces } }
        set { self.state.withLock { $0.pieces = newValue } }
    }

    func recordProgress(rows: Int, bytes: Int) {
        let (newRows, newBytes) = self.state.withLock { state in
            defer {
                state.rowsWritten = rows
                state.bytesWritten = bytes
            }
            return (rows - state.rowsWritten, bytes - state.bytesWritten)
        }
        if newRows > 0 { Telemetry.rowsExported.increment(by: Int64(newRows)) }
        if newBytes > 0 { Telemetry.bytesExported.increment(by: Int64(newBytes)) }
        self.csv.append(length: bytes)
    }

    /// A later piece read `records` more into its spool file (its thread).
    func recordSpooled(_ records: Int) {
        self.state.withLock { $0.rowsSpooled += records }
    }

    /// `records` of a spool file are now in the export's file (before `recordProgress` counts them there).
    func recordStitched(_ records: Int) {
        self.state.withLock { $0.rowsSpooled -= records }
    }

    /// The progress of a run another gateway runs, as it last recorded it
    /// (`gateway.runs`); the file's own length comes from the file.
    func recordRemoteProgress(rows: Int, bytes: Int, totalRows: Int?) {
        self.state.withLock { state in
            state.rowsWritten = max(state.rowsWritten, rows)
            state.bytesWritten = max(state.bytesWritten, bytes)
            if let totalRows { state.totalRows = totalRows }
        }
    }

    /// Running → completed, then the readers learn the file's final size.
    /// False if it was cancelled first: the caller removes the file.
    func complete(_ published: PublishedFile, rows: Int, at now: Date = Date()) -> Bool {
        let (applied, started) = self.state.withLock { state -> (Bool, Date?) in
            guard state.lifecycle.complete(published, at: now) else { return (false, nil) }
            state.rowsWritten = rows
            state.rowsSpooled = 0
            state.bytesWritten = published.size
            state.totalRows = rows
            state.totalRowsExact = true
            state.cancellers = []
            return (true, state.lifecycle.startedAt)
        }
        guard applied else { return false }
        self.csv.complete(published)
        if let started {
            Telemetry.exportDuration.recordNanoseconds(Int64(max(0, now.timeIntervalSince(started)) * 1e9))
        }
        return true
    }

    /// Running → failed (a no-op after a cancel or an interrupt); live readers are aborted.
    func fail(_ error: any Error) {
        self.fail(message: ErrorText.forClient(error, otherwise: "the export failed"))
    }

    /// Fails it with a message safe to show a client (see `fail(_:)`).
    func fail(message: String) {
        let applied = self.state.withLock { state in
            let applied = state.lifecycle.fail(message, at: Date())
            state.cancellers = []
            return applied
        }
        if applied { self.csv.fail(.failed(message)) }
    }

    /// Marks it cancelled and aborts its live readers. Returns what the owner
    /// must do next (dequeue it, or let the worker stop) and the handle that
    /// cancel its queries, which the owner calls on a thread pool (`PQcancel`
    /// blocks: it opens a connection to the server).
    func cancel() -> (ExportLifecycle.StopAction, [PostgresCanceller]) {
        let (action, cancellers) = self.state.withLock { state in
            let action = state.lifecycle.cancel(at: Date())
            return (action, action == .stopWorker ? state.cancellers : [])
        }
        if case .alreadyEnded = action { return (action, []) }
        self.csv.fail(.cancelled())
        self.gzip.withLock { $0 }?.fail(.cancelled())
        return (action, cancellers)
    }

    /// Stops it for a shutdown (see `ExportLifecycle.interrupt`): its live
    /// readers, of the CSV and of a gzip form being made, see an aborted
    /// transfer. Returns what `cancel` returns.
    func interrupt(reason: String = "the server is shutting down") -> (ExportLifecycle.StopAction, [PostgresCanceller]) {
        let (action, cancellers) = self.state.withLock { state in
            let action = state.lifecycle.interrupt()
            return (action, action == .stopWorker ? state.cancellers : [])
        }
        if case .alreadyEnded = action { return (action, []) }
        self.csv.fail(.failed(reason))
        self.gzip.withLock { $0 }?.fail(.failed(reason))
        return (action, cancellers)
    }

    func snapshot() -> Snapshot {
        let gzip = self.publishedGzip
        return self.state.withLock { state in
            Snapshot(
                lifecycle: state.lifecycle, rowsWritten: state.rowsWritten, rowsRead: state.rowsWritten + max(0, state.rowsSpooled),
                bytesWritten: state.bytesWritten, totalRows: state.totalRows, totalRowsExact: state.totalRowsExact, gzip: gzip)
        }
    }
}
