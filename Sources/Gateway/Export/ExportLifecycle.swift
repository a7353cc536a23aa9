import Cache
import Foundation

/// One export's life as a pure state machine:
///
///     queued ──start──▶ running ──complete──▶ completed
///       │                 │  └────fail─────▶ failed
///       └────cancel───────┴────────────────▶ cancelled
///
/// Each event says whether it applied, so the caller learns of races: a
/// `complete` that arrives after a `cancel` is refused, and the caller removes
/// the file it had published.
struct ExportLifecycle: Sendable {
    enum Status: String, Sendable, Codable {
        case queued, running, completed, failed, cancelled
    }

    /// What `cancel` asks the owner to do.
    enum CancelAction: Equatable {
        /// It had not started: take it off the queue.
        case removeFromQueue
        /// It is running: cancel the query; the worker cleans up.
        case stopWorker
        /// It had already ended this way; nothing to do.
        case alreadyEnded(Status)
    }

    private(set) var status: Status = .queued
    private(set) var startedAt: Date?
    private(set) var completedAt: Date?
    private(set) var file: PublishedFile?
    /// Safe to show a client; set when failed.
    private(set) var errorMessage: String?

    init() {}

    /// A life read back from the journal after a restart.
    init(status: Status, startedAt: Date?, completedAt: Date?, file: PublishedFile?, errorMessage: String?) {
        self.status = status
        self.startedAt = startedAt
        self.completedAt = completedAt
        self.file = file
        self.errorMessage = errorMessage
    }

    mutating func start(at now: Date) -> Bool {
        guard self.status == .queued else { return false }
        self.status = .running
        self.startedAt = now
        return true
    }

    mutating func complete(_ file: PublishedFile, at now: Date) -> Bool {
        guard self.status == .running else { return false }
        self.status = .completed
        self.file = file
        self.completedAt = now
        return true
    }

    mutating func fail(_ message: String, at now: Date) -> Bool {
        guard self.status == .running || self.status == .queued else { return false }
        self.status = .failed
        self.errorMessage = message
        self.completedAt = now
        return true
    }

    mutating func cancel(at now: Date) -> CancelAction {
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
}
