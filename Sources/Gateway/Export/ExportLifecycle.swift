import Cache
import Foundation

/// One run's life as a pure state machine:
///
///     queued ──start──▶ running ──complete──▶ completed
///       │                 │  └────fail─────▶ failed
///       └────cancel───────┴────────────────▶ cancelled
///
///     interrupt (shutdown): queued or running stay so, marked interrupted:
///     the worker stops, nothing is journaled, and the next start runs it again.
///
/// Every event is defined in every state and says whether it applied, so the
/// caller learns of races instead of trapping on them: a `complete` that
/// arrives after a `cancel` is refused (the caller removes the file it had
/// published), a `start` after a cancel or an interrupt is refused (the
/// worker does not run it), a `fail` after a cancel changes nothing.
struct ExportLifecycle: Sendable {
    enum Status: String, Sendable, Codable, CaseIterable {
        case queued, running, completed, failed, cancelled
    }

    /// What `cancel` and `interrupt` ask the owner to do.
    enum StopAction: Equatable {
        /// It had not started: take it off the queue.
        case removeFromQueue
        /// It is running: cancel the query; the worker cleans up.
        case stopWorker
        /// It had already ended (or was stopped before); nothing to do.
        case alreadyEnded(Status)
    }

    private(set) var status: Status = .queued
    private(set) var startedAt: Date?
    private(set) var completedAt: Date?
    private(set) var file: PublishedFile?
    /// Safe to show a client; set when failed.
    private(set) var errorMessage: String?
    /// Stopped by a shutdown: still queued or running as far as the journal
    /// and clients know, never started or finished by this process.
    private(set) var interrupted = false

    init() {}

    /// A life read back from the journal after a restart.
    init(status: Status, startedAt: Date?, completedAt: Date?, file: PublishedFile?, errorMessage: String?) {
        self.status = status
        self.startedAt = startedAt
        self.completedAt = completedAt
        self.file = file
        self.errorMessage = errorMessage
    }

    /// Queued → running; refused once cancelled, interrupted or ended.
    mutating func start(at now: Date) -> Bool {
        guard self.status == .queued, !self.interrupted else { return false }
        self.status = .running
        self.startedAt = now
        return true
    }

    /// Running → completed; refused in any other state. An interrupted run
    /// that finished anyway completes: its file is whole.
    mutating func complete(_ file: PublishedFile, at now: Date) -> Bool {
        guard self.status == .running else { return false }
        self.status = .completed
        self.file = file
        self.completedAt = now
        self.interrupted = false
        return true
    }

    /// Queued or running → failed; refused once cancelled, interrupted or ended.
    mutating func fail(_ message: String, at now: Date) -> Bool {
        guard self.status == .running || self.status == .queued, !self.interrupted else { return false }
        self.status = .failed
        self.errorMessage = message
        self.completedAt = now
        return true
    }

    mutating func cancel(at now: Date) -> StopAction {
        switch self.status {
        case .queued:
            self.status = .cancelled
            self.completedAt = now
            return .removeFromQueue
        case .running:
            self.status = .cancelled
            self.completedAt = now
            return .stopWorker
        case .completed, .failed, .cancelled:
            return .alreadyEnded(self.status)
        }
    }

    /// Stops a queued or running run for a shutdown, leaving its status.
    mutating func interrupt() -> StopAction {
        guard !self.interrupted else { return .alreadyEnded(self.status) }
        switch self.status {
        case .queued:
            self.interrupted = true
            return .removeFromQueue
        case .running:
            self.interrupted = true
            return .stopWorker
        case .completed, .failed, .cancelled:
            return .alreadyEnded(self.status)
        }
    }
}
