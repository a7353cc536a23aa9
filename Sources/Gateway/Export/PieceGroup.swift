import Foundation

/// The later pieces of one export, each read on a thread of its own: the
/// export's worker waits for all of them to stop before it ends (so no
/// piece outlives its spool file or its export), and tells them to stop
/// when it fails. `@unchecked Sendable`: every field is under `condition`.
final class PieceGroup: @unchecked Sendable {
    private let condition = NSCondition()
    private var running = 0
    private var stopped = false

    func enter() {
        self.condition.lock()
        self.running += 1
        self.condition.unlock()
    }

    func leave() {
        self.condition.lock()
        self.running -= 1
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// Tells every piece to stop at its next look (each looks at every
    /// write and at least once a second while PostgreSQL is silent).
    func stop() {
        self.condition.lock()
        self.stopped = true
        self.condition.unlock()
    }

    var isStopped: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.stopped
    }

    /// Returns once every piece has left.
    func waitForAll() {
        self.condition.lock()
        while self.running > 0 { self.condition.wait() }
        self.condition.unlock()
    }
}
