import Cache
import Foundation
import Synchronization

/// One export: what was asked, its life, its progress, and the growing file
/// its readers follow. Shared by the HTTP handlers, the manager and one worker;
/// all mutable state is under one lock.
final class ExportJob: Sendable {
    let id: UUID
    let request: ExportRequest
    let createdAt: Date
    let file = GrowingFile()

    private struct State {
        var lifecycle = ExportLifecycle()
        var rowsWritten = 0
        var bytesWritten = 0
        var totalRows: Int?
        var totalRowsExact = false
        var canceller: PostgresCanceller?
    }

    private let state = Mutex(State())
    /// The gzip form, made once by `GzipProducer` when a gzip reader first asks.
    private let gzip = Mutex<GrowingFile?>(nil)

    init(id: UUID = UUID(), request: ExportRequest, createdAt: Date = Date()) {
        self.id = id
        self.request = request
        self.createdAt = createdAt
    }

    var status: ExportLifecycle.Status { self.state.withLock { $0.lifecycle.status } }

    /// The gzip form of the CSV; `start` is called only by the first caller,
    /// to set its production going.
    func gzipFile(orStart start: (GrowingFile) -> Void) -> GrowingFile {
        let (file, created) = self.gzip.withLock { gzip -> (GrowingFile, Bool) in
            if let gzip { return (gzip, false) }
            let file = GrowingFile()
            gzip = file
            return (file, true)
        }
        if created { start(file) }
        return file
    }

    /// The finished gzip form, once there is one.
    var publishedGzip: PublishedFile? { self.gzip.withLock { $0 }?.completedFile }
    var publishedFile: PublishedFile? { self.state.withLock { $0.lifecycle.file } }

    /// Queued → running; false if it was cancelled while it waited.
    func markRunning() -> Bool { self.state.withLock { $0.lifecycle.start(at: Date()) } }

    /// Lets `cancel` reach the query. False if the export was cancelled already,
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
        self.file.append(length: bytes)
    }

    /// Running → completed, then the file's readers learn its final size.
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
        if applied { self.file.complete(published) }
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
        self.file.fail(.failed(message))
    }

    /// Marks it cancelled and aborts its live readers; returns what the owner
    /// must do next (dequeue it, or let the worker stop).
    func cancel() -> ExportLifecycle.CancelAction {
        let (action, canceller) = self.state.withLock { state in
            let action = state.lifecycle.cancel(at: Date())
            return (action, action == .stopWorker ? state.canceller : nil)
        }
        if case .alreadyEnded = action { return action }
        self.file.fail(.cancelled())
        canceller?.cancel()
        return action
    }

    func snapshot(now: Date = Date()) -> ExportStatus {
        let gzip = self.publishedGzip
        return self.state.withLock { state in
            ExportStatus(job: self, lifecycle: state.lifecycle, rowsWritten: state.rowsWritten, bytesWritten: state.bytesWritten, totalRows: state.totalRows, totalRowsExact: state.totalRowsExact, gzip: gzip, now: now)
        }
    }
}
