import Foundation

/// Who runs and who waits, as a pure state machine: at most `maxRunning`
/// exports run, at most `maxQueued` wait in order, and the rest are refused.
struct ExportScheduler {
    enum Admission: Equatable {
        case start
        case queued(position: Int)
        case rejected
    }

    let maxRunning: Int
    let maxQueued: Int
    private(set) var running: Set<UUID> = []
    private(set) var queue: [UUID] = []

    init(maxRunning: Int, maxQueued: Int) {
        // Configuration bounds both; out-of-range values are clamped, not trapped on.
        self.maxRunning = max(1, maxRunning)
        self.maxQueued = max(0, maxQueued)
    }

    mutating func submit(_ id: UUID) -> Admission {
        if self.running.count < self.maxRunning {
            self.running.insert(id)
            return .start
        }
        guard self.queue.count < self.maxQueued else { return .rejected }
        self.queue.append(id)
        return .queued(position: self.queue.count)
    }

    /// Re-admits an export after a restart: it was admitted before, so the
    /// queue's bound does not refuse it.
    mutating func readmit(_ id: UUID) -> Admission {
        if self.running.count < self.maxRunning {
            self.running.insert(id)
            return .start
        }
        self.queue.append(id)
        return .queued(position: self.queue.count)
    }

    /// A running export ended; returns the next one to start, if any.
    mutating func finished(_ id: UUID) -> UUID? {
        guard self.running.remove(id) != nil else { return nil }
        guard !self.queue.isEmpty else { return nil }
        let next = self.queue.removeFirst()
        self.running.insert(next)
        return next
    }

    /// Takes a waiting export off the queue; false if it was not waiting.
    mutating func removeQueued(_ id: UUID) -> Bool {
        guard let index = self.queue.firstIndex(of: id) else { return false }
        self.queue.remove(at: index)
        return true
    }
}
