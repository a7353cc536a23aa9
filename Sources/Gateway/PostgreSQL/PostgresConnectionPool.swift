import Foundation
import Synchronization

/// Idle export connections kept for the next export. A new connection costs
/// a backend fork and a SCRAM exchange, 10 ms here (`pgbench -C`), which
/// was a third of a filtered export's time to first byte; a kept one costs
/// nothing. At most `maxIdle` are kept, each for at most `maxIdleTime`
/// (`closeStale`, from the janitor), so an idle gateway lets its backends go.
///
/// Only a connection whose last transaction ended cleanly comes back
/// (`checkIn`); one that failed, was cancelled or was abandoned is closed by
/// its user. A kept connection that died meanwhile (the database restarted,
/// its backend was terminated) is found out before it is handed over: the
/// server said something on an idle connection (`looksAlive`), or it does
/// not answer an empty statement within a second (`ping`: a frozen backend,
/// a host gone silent); it is closed and the next one tried. Blocking:
/// worker threads only.
final class PostgresConnectionPool: Sendable {
    private let settings: PostgresSettings
    private let maxIdle: Int
    private let maxIdleTime: Duration
    private let idle = Mutex<[Kept]>([])

    init(settings: PostgresSettings, maxIdle: Int, maxIdleTime: Duration = .seconds(60)) {
        self.settings = settings
        self.maxIdle = max(0, maxIdle)
        self.maxIdleTime = maxIdleTime
    }

    /// A kept connection that still looks alive if there is one, else a new one.
    func connect() throws -> PostgresConnection {
        while let kept = self.idle.withLock({ $0.popLast() }) {
            if kept.connection.looksAlive, kept.connection.ping(timeout: .seconds(1)) { return kept.connection }
            kept.connection.close()
        }
        return try PostgresConnection(self.settings)
    }

    /// Gives back a connection whose last transaction ended cleanly; it is
    /// closed instead when the pool is full.
    func checkIn(_ connection: PostgresConnection) {
        connection.abandonWhen = nil
        let kept = Kept(connection, since: .now)
        let stored = self.idle.withLock { idle -> Bool in
            guard idle.count < self.maxIdle else { return false }
            idle.append(kept)
            return true
        }
        if !stored { connection.close() }
    }

    /// The backends of the kept connections (every connection of a gateway
    /// has the same `application_name`: this tells which are export ones).
    var idleBackendPIDs: [Int32] {
        self.idle.withLock { $0.map { $0.connection.backendPID } }
    }

    /// Closes connections idle for longer than `maxIdleTime`.
    func closeStale() {
        let now = ContinuousClock.now
        let stale = self.idle.withLock { idle -> [Kept] in
            let (old, young) = (idle.filter { now - $0.since >= self.maxIdleTime }, idle.filter { now - $0.since < self.maxIdleTime })
            idle = young
            return old
        }
        stale.forEach { $0.connection.close() }
    }

    /// Closes every idle connection (shutdown).
    func closeAll() {
        self.idle.withLock { idle in
            defer { idle = [] }
            return idle
        }.forEach { $0.connection.close() }
    }

    /// Opens connections until `count` are idle, so the first exports after a
    /// start do not pay for them. Failures are ignored: the export connects
    /// on its own and reports the error.
    func warm(_ count: Int) {
        for _ in 0..<min(count, self.maxIdle) {
            guard self.idle.withLock({ $0.count }) < count, let connection = try? PostgresConnection(self.settings) else { return }
            self.checkIn(connection)
        }
    }

    /// `@unchecked Sendable`: one user at a time, who takes it out of the
    /// pool under the pool's lock before using it.
    private final class Kept: @unchecked Sendable {
        let connection: PostgresConnection
        let since: ContinuousClock.Instant
        init(_ connection: PostgresConnection, since: ContinuousClock.Instant) {
            self.connection = connection
            self.since = since
        }
    }
}
