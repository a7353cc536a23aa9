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
    let csv = SharedFile()

    private struct State {
        var lifecycle = ExportLifecycle()
        var rowsWritten = 0
        var bytesWritten = 0
        var totalRows: Int?
        var totalRowsExact = false
        var canceller: PostgresCanceller?
    }

    /// What a status shows of the run.
    struct Snapshot {
        let lifecycle: ExportLifecycle
        let rowsWritten: Int
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
    }

    /// A run read back from the journal that had ended (completed, failed or
    /// cancelled); `gzip` is its gzip form if that was made and is still on disk.
    init(id: UUID, request: ExportRequest, ended lifecycle: ExportLifecycle, rows: Int, gzip: PublishedFile?) {
        self.id = id
        self.request = request
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

    /// The gzip form of the CSV; `start` is called only by the first caller,
    /// to set its production going.
    func gzipFile(orStart start: (SharedFile) -> Void) -> SharedFile {
        let (file, created) = self.gzip.withLock { gzip -> (SharedFile, Bool) in
            if let gzip { return (gzip, false) }
            let file = SharedFile()
            gzip = file
            return (file, true)
        }
        if created { start(file) }
        return file
    }

    /// The files of this run on disk: published ones, and bytes of partial
    /// ones (the CSV while it runs, the gzip form while it is made).
    func diskUse() -> (published: [PublishedFile], partial: Int) {
        var published: [PublishedFile] = []
        var partial = 0
        let (status, file, written) = self.state.withLock { ($0.lifecycle.status, $0.lifecycle.file, $0.bytesWritten) }
        if let file { published.append(file) } else if status == .running { partial += written }
        if let gzip = self.gzip.withLock({ $0 })?.primary {
            if let done = gzip.completedFile { published.append(done) } else { partial += gzip.length }
        }
        return (published, partial)
    }

    /// The finished gzip form, once there is one.
    var publishedGzip: PublishedFile? { self.gzip.withLock { $0 }?.primary.completedFile }

    /// Ends every export's view of this run's files (the CSV and the gzip form).
    func detach(_ exportID: UUID, with error: CacheError) {
        self.csv.detach(exportID, with: error)
        self.gzip.withLock { $0 }?.detach(exportID, with: error)
    }

    /// Queued → running; false if it was cancelled while it waited.
    func markRunning() -> Bool { self.state.withLock { $0.lifecycle.start(at: Date()) } }

    /// Lets `cancel` reach the query. False if the run was cancelled already,
    /// in which case the worker must stop.
    func attach(_ canceller: PostgresCanceller?) -> Bool {
        self.state.withLock { state in
            guard state.lifecycle.status == .running else { return false }
            state.canceller = canceller
            return true
        }
    }

    func setEstimate(rows: Int) {
        self.state.withLock { $0.totalRows = rows }
    }

    func recordProgress(rows: Int, bytes: Int) {
        self.state.withLock { state in
            state.rowsWritten = rows
            state.bytesWritten = bytes
        }
        self.csv.append(length: bytes)
    }

    /// Running → completed, then the readers learn the file's final size.
    /// False if it was cancelled first: the caller removes the file.
    func complete(_ published: PublishedFile, rows: Int) -> Bool {
        let applied = self.state.withLock { state in
            guard state.lifecycle.complete(published, at: Date()) else { return false }
            state.rowsWritten = rows
            state.bytesWritten = published.size
            state.totalRows = rows
            state.totalRowsExact = true
            state.canceller = nil
            return true
        }
        if applied { self.csv.complete(published) }
        return applied
    }

    /// Running → failed (a no-op after a cancel); live readers are aborted.
    func fail(_ error: any Error) {
        // Only our own errors have descriptions written for clients.
        let message = switch error {
        case let error as PostgresError: error.description
        case let error as CacheError: error.description
        default: "the export failed"
        }
        self.state.withLock { state in
            _ = state.lifecycle.fail(message, at: Date())
            state.canceller = nil
        }
        self.csv.fail(.failed(message))
    }

    /// Marks it cancelled and aborts its live readers; returns what the owner
    /// must do next (dequeue it, or let the worker stop).
    func cancel() -> ExportLifecycle.CancelAction {
        let (action, canceller) = self.state.withLock { state in
            let action = state.lifecycle.cancel(at: Date())
            return (action, action == .stopWorker ? state.canceller : nil)
        }
        if case .alreadyEnded = action { return action }
        self.csv.fail(.cancelled())
        canceller?.cancel()
        return action
    }

    func snapshot() -> Snapshot {
        let gzip = self.publishedGzip
        return self.state.withLock { state in
            Snapshot(lifecycle: state.lifecycle, rowsWritten: state.rowsWritten, bytesWritten: state.bytesWritten, totalRows: state.totalRows, totalRowsExact: state.totalRowsExact, gzip: gzip)
        }
    }
}
