import Foundation
import Logging
import Synchronization

/// Listens for the database's notifications (every `ClusterChannel`: see
/// `ClusterChannel.swift` and `ExportJournal+Runs.swift`) on a
/// connection and a thread of its own (the wait blocks), and hands each to
/// the manager. A lost connection is made again a second later; since
/// notifications sent meanwhile are lost, `reconnected` is called then, and
/// the manager looks everything up again.
final class ClusterListener: Sendable {
    private let settings: PostgresSettings
    private let logger: Logger
    private let stopped = Mutex(false)

    init(settings: PostgresSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    func start(_ notified: @escaping @Sendable (PostgresConnection.Notification) -> Void, reconnected: @escaping @Sendable () -> Void) {
        let thread = Thread { self.listen(notified, reconnected: reconnected) }
        thread.name = "gateway-listener"
        // libpq's connect (SCRAM, TLS) needs more than Foundation's default stack.
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// The thread ends within half a second.
    func stop() {
        self.stopped.withLock { $0 = true }
    }

    private var isStopped: Bool { self.stopped.withLock { $0 } }

    private func listen(_ notified: (PostgresConnection.Notification) -> Void, reconnected: () -> Void) {
        while !self.isStopped {
            do {
                let db = try PostgresConnection(self.settings)
                defer { db.close() }
                try db.execute(ClusterChannel.allCases.map { "LISTEN \($0.rawValue)" }.joined(separator: "; "))
                // What was sent before this LISTEN (at start, or while away) was missed.
                reconnected()
                while !self.isStopped {
                    for notification in try db.notifications(waitingAtMost: .milliseconds(500)) { notified(notification) }
                }
            } catch {
                if self.isStopped { return }
                self.logger.notice("the cluster listener lost its database connection; reconnecting", metadata: ["error": "\(ErrorText.details(error))"])
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }
}
