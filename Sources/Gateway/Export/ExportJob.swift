import Cache
import Foundation
import Synchronization

/// One export, as a client knows it: its id, its owner, when it was asked for, and the
/// run that produces its bytes (shared with every export of the same
/// canonical request). Its own state is only whether it was cancelled; all
/// else is the run's.
final class ExportJob: Sendable {
    let id: UUID
    let createdAt: Date
    let run: ExportRun
    /// The id of the API token that asked for it (nil: made without tokens).
    let owner: String?
    private let cancelledDate = Mutex<Date?>(nil)

    init(id: UUID = UUID(), run: ExportRun, owner: String?, createdAt: Date = Date(), cancelledAt: Date? = nil) {
        self.id = id
        self.owner = owner
        self.run = run
        self.createdAt = createdAt
        self.cancelledDate.withLock { $0 = cancelledAt }
    }

    var request: ExportRequest { self.run.request }

    /// The CSV as this export's readers follow it.
    var file: GrowingFile { self.view(of: self.run.csv) }

    /// This export's view of one of its run's files (the CSV or the gzip form).
    func view(of shared: SharedFile) -> GrowingFile {
        let view = shared.view(for: self.id)
        // Cancelled between a status check and now: the new view ends too.
        if self.isCancelled { shared.detach(self.id, with: .cancelled()) }
        return view
    }

    var status: ExportLifecycle.Status {
        self.cancelledDate.withLock { $0 } == nil ? self.run.status : .cancelled
    }

    /// When a client cancelled it, if one did.
    var cancelledAt: Date? { self.cancelledDate.withLock { $0 } }

    var isCancelled: Bool { self.cancelledDate.withLock { $0 } != nil }

    /// Marks this export cancelled and aborts its own readers; the run goes
    /// on for other exports. False if it was cancelled already.
    func markCancelled() -> Bool {
        let first = self.cancelledDate.withLock { cancelledAt -> Bool in
            guard cancelledAt == nil else { return false }
            cancelledAt = Date()
            return true
        }
        if first { self.run.detach(self.id, with: .cancelled()) }
        return first
    }

    func snapshot(now: Date = Date()) -> ExportStatus {
        ExportStatus(job: self, run: self.run.snapshot(), cancelledAt: self.cancelledDate.withLock { $0 }, now: now)
    }
}
