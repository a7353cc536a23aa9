import Cache
import Foundation
import Logging
import Synchronization

/// The exports, kept in PostgreSQL (`gateway.exports`) so they survive a
/// restart or `kill -9`: a client that holds an export id still gets its
/// file after one. One row per export; the rows of exports that share a run
/// carry its `run_id` and are updated together.
///
/// What is written when: a row when an export is admitted (before the 202),
/// `running`, `completed` (with size and hash) or `failed` as its run
/// moves, `cancelled` when a client cancels (before the 200), the gzip
/// form's hash when it is published; the row is deleted with the export
/// (before the 204). A graceful shutdown writes nothing, so what was queued
/// or running is queued again on start.
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
    /// One row, as read back on start.
    struct Record: Sendable {
        let id: UUID
        let runID: UUID
        let query: String
        let createdAt: Date
        let status: ExportLifecycle.Status
        let startedAt: Date?
        let completedAt: Date?
        let cancelledAt: Date?
        let expiredAt: Date?
        let rows: Int?
        let sizeBytes: Int?
        let sha256: String?
        let gzipSizeBytes: Int?
        let gzipSha256: String?
        let error: String?
        /// The id of the API token that made it (nil: made without tokens).
        let owner: String?
    }

    /// The journal could not be written, even on a fresh connection.
    struct Unavailable: Error, CustomStringConvertible {
        let details: String
        var description: String { "the export journal is unavailable" }
    }

    static let schema = """
        CREATE SCHEMA IF NOT EXISTS gateway;
        CREATE TABLE IF NOT EXISTS gateway.exports (
            id uuid PRIMARY KEY,
            run_id uuid NOT NULL,
            query text NOT NULL,
            created_at timestamptz NOT NULL,
            status text NOT NULL,
            started_at timestamptz,
            completed_at timestamptz,
            cancelled_at timestamptz,
            rows_written bigint,
            size_bytes bigint,
            sha256 text,
            gzip_size_bytes bigint,
            gzip_sha256 text,
            error text
        );
        ALTER TABLE gateway.exports ADD COLUMN IF NOT EXISTS expired_at timestamptz;
        ALTER TABLE gateway.exports ADD COLUMN IF NOT EXISTS owner text;
        CREATE INDEX IF NOT EXISTS exports_run_id_idx ON gateway.exports (run_id);
        """

    private let settings: PostgresSettings
    private let logger: Logger
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

    /// Creates the schema if needed and reads every export back.
    func load() throws -> [Record] {
        try self.run("load") { db in
            try db.execute("BEGIN; SELECT pg_advisory_xact_lock(7573657273656565); " + Self.schema + "; COMMIT")
            return try db.execute("""
                SELECT id, run_id, query, extract(epoch FROM created_at), status, extract(epoch FROM started_at),
                       extract(epoch FROM completed_at), extract(epoch FROM cancelled_at), rows_written, size_bytes,
                       sha256, gzip_size_bytes, gzip_sha256, error, extract(epoch FROM expired_at), owner
                FROM gateway.exports ORDER BY created_at
                """)
        }.compactMap(Self.record)
    }

    private static func record(_ row: [String?]) -> Record? {
        guard row.count >= 16 else { return nil }
        func date(_ i: Int) -> Date? { row[i].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } }
        guard let id = row[0].flatMap(UUID.init(uuidString:)), let runID = row[1].flatMap(UUID.init(uuidString:)),
            let query = row[2], let createdAt = date(3), let status = row[4].flatMap(ExportLifecycle.Status.init(rawValue:))
        else { return nil }
        return Record(
            id: id, runID: runID, query: query, createdAt: createdAt, status: status, startedAt: date(5),
            completedAt: date(6), cancelledAt: date(7), expiredAt: date(14), rows: row[8].flatMap { Int($0) }, sizeBytes: row[9].flatMap { Int($0) },
            sha256: row[10], gzipSizeBytes: row[11].flatMap { Int($0) }, gzipSha256: row[12], error: row[13], owner: row[15]
        )
    }

    /// A new export, with its run's state as it is now. If the run moved on
    /// while the row was being written (its update found no row yet), the
    /// run's state is written again, so the row never stays behind.
    func insert(_ job: ExportJob) throws {
        let run = job.run.snapshot()
        try self.run("insert") { db in
            try db.execute(
                """
                INSERT INTO gateway.exports (id, run_id, query, created_at, status, started_at, completed_at, rows_written, size_bytes, sha256, error, gzip_size_bytes, gzip_sha256, owner)
                VALUES ($1, $2, $3, to_timestamp($4), $5, to_timestamp($6), to_timestamp($7), $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (id) DO NOTHING
                """,
                parameters: [job.id.uuidString, job.run.id.uuidString, job.request.canonicalQuery, Self.epoch(job.createdAt)]
                    + Self.runState(run) + [run.gzip.map { String($0.size) }, run.gzip?.sha256, job.owner])
        }
        if job.run.snapshot().version != run.version {
            try? self.update(job.run)
        }
    }

    /// The run's state, on every export of it that a client has not
    /// cancelled. A row that has ended (completed, failed) keeps that end
    /// unless the new state is the same end: an update that arrives late
    /// never takes a row back. A row that says cancelled though no client
    /// cancelled it (the run's state, written as it stopped) is not an end:
    /// the next start runs it again, and its completion must be written.
    func update(_ run: ExportRun) throws {
        let snapshot = run.snapshot()
        try self.run("update") { db in
            try db.execute(
                """
                UPDATE gateway.exports SET status = $2, started_at = to_timestamp($3), completed_at = to_timestamp($4),
                    rows_written = $5, size_bytes = $6, sha256 = $7, error = $8
                WHERE run_id = $1 AND cancelled_at IS NULL AND (status IN ('queued', 'running', 'cancelled') OR status = $2)
                """,
                parameters: [run.id.uuidString] + Self.runState(snapshot))
        }
    }

    /// The columns a run's state fills, in this order: status, started_at,
    /// completed_at, rows_written, size_bytes, sha256, error.
    private static func runState(_ run: ExportRun.Snapshot) -> [String?] {
        let life = run.lifecycle
        return [
            life.status.rawValue, life.startedAt.map(Self.epoch), life.completedAt.map(Self.epoch),
            life.status == .completed ? String(run.rowsWritten) : nil, life.file.map { String($0.size) }, life.file?.sha256,
            life.errorMessage,
        ]
    }

    func recordGzip(_ file: PublishedFile, of run: ExportRun) throws {
        try self.run("gzip") { db in
            try db.execute("UPDATE gateway.exports SET gzip_size_bytes = $2, gzip_sha256 = $3 WHERE run_id = $1",
                parameters: [run.id.uuidString, String(file.size), file.sha256])
        }
    }

    func markCancelled(_ id: UUID) throws {
        try self.run("cancel") { db in
            try db.execute("UPDATE gateway.exports SET status = 'cancelled', cancelled_at = coalesce(cancelled_at, now()) WHERE id = $1",
                parameters: [id.uuidString])
        }
    }

    /// Expired exports stay as rows, so their ids answer 410 after a restart;
    /// `forgetExpired` drops them once they have been expired for `after`.
    func markExpired(_ ids: [UUID]) throws {
        guard !ids.isEmpty else { return }
        try self.run("expire") { db in
            try db.execute("UPDATE gateway.exports SET expired_at = coalesce(expired_at, now()) WHERE id = ANY($1::uuid[])",
                parameters: ["{" + ids.map(\.uuidString).joined(separator: ",") + "}"])
        }
    }

    func forgetExpired(after seconds: Int) throws {
        try self.run("forget expired") { db in
            try db.execute("DELETE FROM gateway.exports WHERE expired_at < now() - make_interval(secs => $1::double precision)", parameters: [String(seconds)])
        }
    }

    func delete(_ id: UUID) throws {
        try self.run("delete") { db in
            try db.execute("DELETE FROM gateway.exports WHERE id = $1", parameters: [id.uuidString])
        }
    }

    /// Runs `body` on a pooled connection, and once more on a fresh one if
    /// that fails; throws `Unavailable` when both fail.
    private func run<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        if let pooled = self.idle.withLock({ $0.popLast() }) {
            do {
                let result = try body(pooled.connection)
                self.giveBack(pooled)
                return result
            } catch {
                // Perhaps a connection that a database restart broke: drop it, try a fresh one.
                pooled.connection.close()
                self.logger.notice("export journal \(what) failed; retrying on a new connection", metadata: ["error": "\(errorDetails(error))"])
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
            self.logger.warning("export journal \(what) failed", metadata: ["error": "\(errorDetails(error))"])
            throw Unavailable(details: errorDetails(error))
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

    private static func epoch(_ date: Date) -> String { String(date.timeIntervalSince1970) }
}

/// A journal connection in the idle pool. `@unchecked Sendable`: it has one
/// user at a time, who takes it out of the pool (under the pool's lock)
/// before using it and puts it back after.
private final class PooledConnection: @unchecked Sendable {
    let connection: PostgresConnection
    init(_ connection: PostgresConnection) { self.connection = connection }
}
