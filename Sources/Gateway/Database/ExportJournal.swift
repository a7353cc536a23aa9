import Foundation
import Logging
import Synchronization

/// The exports, kept in PostgreSQL (`gateway.exports`) so they survive a
/// restart or `kill -9` and are the same on every gateway of a cluster: a
/// client that holds an export id gets its file from any gateway, after any
/// restart. One row per export; the rows of exports that share a run carry
/// its `run_id`, and the run itself has a row in `gateway.runs` (the shared
/// queue, its claims and leases).
///
/// This file holds the journal itself: its connections and how a statement
/// or a transaction runs on them (retried once on a fresh connection), and
/// the helpers every part shares. The rest is split by purpose:
/// - `ExportJournal+Schema.swift`: the tables, and the migration that makes them;
/// - `ExportJournal+Exports.swift`: export rows (admit, cancel, delete,
///   fetch, expire), and `ExportJournal+List.swift`: the pages of `GET /exports`;
/// - `ExportJournal+Runs.swift`: the run queue (claims, leases, renewals,
///   publish, fail, release, requeue, all fenced by the claim);
/// - `ExportJournal+Objects.swift`: the files of `objects/` and the rows
///   that refer to them (advisory locks on their hashes);
/// - `ClusterChannel.swift`: the `NOTIFY` channels; `ResultRow.swift`:
///   rows read by column name.
///
/// What is written when: a row when an export is admitted (before the 202),
/// `running`, `completed` (with size and hash) or `failed` as its run
/// moves, `cancelled` when a client cancels (before the 200), the gzip
/// form's hash when it is published; the row is deleted with the export
/// (before the 204). A graceful shutdown gives the runs it stopped back to
/// the queue.
///
/// Every call blocks: call it from a worker thread or the database pool,
/// never from the cooperative pool. Each statement runs on a connection taken
/// from a small pool (no lock is held while it runs); a statement that fails
/// is tried once more on a fresh connection (the first may have been broken
/// by a database restart), and if that fails too the call throws, so the
/// caller never acknowledges what is not written. Every statement is
/// idempotent, so a retry after a lost reply does no harm. Journal
/// connections have a statement timeout; every connection has a connect
/// timeout and keepalives (`PostgresSettings`).
final class ExportJournal: Sendable {
    /// The journal could not be written, even on a fresh connection.
    struct Unavailable: Error, CustomStringConvertible {
        let details: String
        var description: String { "the export journal is unavailable" }
    }

    private let settings: PostgresSettings
    private let logger: Logger
    /// The statement timeout of journal connections, if any.
    var statementTimeoutMilliseconds: Int? { self.settings.statementTimeoutMilliseconds }
    /// Idle connections, at most `maxIdle`; a statement takes one out for as
    /// long as it runs, so the lock is never held across a round trip.
    private let idle = Mutex<[PooledConnection]>([])
    private let maxIdle = 4

    /// - Parameter settings: how to connect; `statementTimeoutMilliseconds`
    ///   bounds every journal statement.
    init(settings: PostgresSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// The advisory lock that serializes admissions (and what must not
    /// interleave with them) across the cluster.
    static let admissionLock = "7573657273656566"

    /// Runs `body` on a pooled connection, and once more on a fresh one if
    /// that fails; throws `Unavailable` when both fail. `body` must be safe
    /// to run twice (the first run's outcome may be unknown).
    func withRetryOnce<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        if let pooled = self.idle.withLock({ $0.popLast() }) {
            do {
                let result = try body(pooled.connection)
                self.giveBack(pooled)
                return result
            } catch {
                // Perhaps a connection that a database restart broke: drop it, try a fresh one.
                pooled.connection.close()
                self.logger.notice("export journal \(what) failed; retrying on a new connection", metadata: ["error": "\(ErrorText.details(error))"])
            }
        }
        do {
            let fresh = PooledConnection(try PostgresConnection(self.settings))
            do {
                let result = try body(fresh.connection)
                self.giveBack(fresh)
                return result
            } catch {
                fresh.connection.close()
                throw error
            }
        } catch {
            Telemetry.journalWriteFailures.increment()
            self.logger.warning("export journal \(what) failed", metadata: ["error": "\(ErrorText.details(error))"])
            throw Unavailable(details: ErrorText.details(error))
        }
    }

    /// Runs `body` in a transaction (on the journal's connections, retried
    /// once on a fresh one by `withRetryOnce`: every body here may run
    /// twice). A gateway that stops in the middle (frozen, cut off) must not
    /// hold its locks for long: the server ends a transaction left idle for
    /// the journal's statement timeout, and the locks go with it.
    func inTransactionRetryingOnce<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        let idleLimit = max(1000, self.statementTimeoutMilliseconds ?? 5000)
        return try self.withRetryOnce(what) { db in
            try db.execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = \(idleLimit)")
            do {
                let result = try body(db)
                try db.execute("COMMIT")
                return result
            } catch {
                _ = try? db.execute("ROLLBACK")
                throw error
            }
        }
    }

    private func giveBack(_ pooled: PooledConnection) {
        let kept = self.idle.withLock { idle -> Bool in
            guard idle.count < self.maxIdle else { return false }
            idle.append(pooled)
            return true
        }
        if !kept { pooled.connection.close() }
    }

    /// A PostgreSQL array literal of plain values (UUIDs, numbers, hex, NULL),
    /// for one `$n::type[]` parameter.
    static func array(_ values: [String]) -> String {
        "{" + values.joined(separator: ",") + "}"
    }

    /// Tells the other gateways (and this one's listener) on `channel`, in
    /// the transaction of `db` (a notification is sent when it commits):
    /// `NOTIFY` without a payload, or `pg_notify` with the id in lower case.
    static func notify(_ db: PostgresConnection, _ channel: ClusterChannel, about id: UUID? = nil) throws {
        if let id {
            try db.execute("SELECT pg_notify($1, $2)", parameters: [channel.rawValue, id.uuidString.lowercased()])
        } else {
            try db.execute("NOTIFY \(channel.rawValue)")
        }
    }
}

/// A journal connection in the idle pool. `@unchecked Sendable`: it has one
/// user at a time, who takes it out of the pool (under the pool's lock)
/// before using it and puts it back after.
private final class PooledConnection: @unchecked Sendable {
    let connection: PostgresConnection
    init(_ connection: PostgresConnection) { self.connection = connection }
}
