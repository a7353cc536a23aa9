import Cache
import Foundation
import Logging
import Synchronization

/// The exports, kept in PostgreSQL (`gateway.exports`) so they survive a
/// restart or `kill -9` and are the same on every gateway of a cluster: a
/// client that holds an export id gets its file from any gateway, after any
/// restart. One row per export; the rows of exports that share a run carry
/// its `run_id`, and the run itself has a row in `gateway.runs`
/// (`ExportJournal+Runs.swift`: the shared queue, its claims and leases).
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
        /// Expired early: its file was evicted to make room (`expired_reason`).
        var evicted = false
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
        -- Why an export expired early: 'evicted' (its file made room in a
        -- full cache); NULL: EXPORT_TTL passed.
        ALTER TABLE gateway.exports ADD COLUMN IF NOT EXISTS expired_reason text;
        CREATE INDEX IF NOT EXISTS exports_run_id_idx ON gateway.exports (run_id);
        CREATE INDEX IF NOT EXISTS exports_sha256_idx ON gateway.exports (sha256);
        CREATE INDEX IF NOT EXISTS exports_gzip_sha256_idx ON gateway.exports (gzip_sha256);
        -- The pages of GET /exports: one token's, or all, newest first.
        CREATE INDEX IF NOT EXISTS exports_owner_created_idx ON gateway.exports (owner, created_at, id);
        CREATE INDEX IF NOT EXISTS exports_created_idx ON gateway.exports (created_at, id);
        """ + runsSchema

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

    /// Creates the schema if needed and reads every export back.
    func load() throws -> [Record] {
        try self.run("load") { db in
            // Only when something is missing: `ALTER TABLE` takes an
            // exclusive lock even when it changes nothing, and other gateways
            // on the database are using the tables now.
            if Self.cell(try db.execute(Self.schemaIsCurrent)) != "t" {
                try db.execute("BEGIN; SELECT pg_advisory_xact_lock(7573657273656565); " + Self.schema + "; COMMIT")
            }
            return try db.execute(Self.selectExports + " ORDER BY e.created_at")
        }.compactMap(Self.record)
    }

    /// True when the newest of `schema`'s objects exist (update it with the schema).
    static let schemaIsCurrent = """
        SELECT count(*) = 5 AND to_regclass('gateway.exports_created_idx') IS NOT NULL AND to_regclass('gateway.token_windows') IS NOT NULL
        FROM information_schema.columns WHERE table_schema = 'gateway' AND (
            (table_name = 'exports' AND column_name = 'owner') OR (table_name = 'runs' AND column_name = 'query')
            OR (table_name = 'runs' AND column_name = 'joinable') OR (table_name = 'runs' AND column_name = 'owner')
            OR (table_name = 'exports' AND column_name = 'expired_reason'))
        """

    /// An export's row with its run's state (from `gateway.runs`, where the
    /// cluster keeps it; an earlier version's rows have only their own).
    static let selectExports = """
        SELECT e.id, e.run_id, e.query, extract(epoch FROM e.created_at),
               CASE WHEN e.cancelled_at IS NOT NULL THEN 'cancelled' ELSE coalesce(r.state, e.status) END,
               extract(epoch FROM coalesce(r.started_at, e.started_at)), extract(epoch FROM coalesce(r.completed_at, e.completed_at)),
               extract(epoch FROM e.cancelled_at),
               CASE WHEN coalesce(r.state, e.status) = 'completed' THEN coalesce(r.rows_written, e.rows_written) END,
               coalesce(r.size_bytes, e.size_bytes), coalesce(r.sha256, e.sha256), coalesce(r.gzip_size_bytes, e.gzip_size_bytes),
               coalesce(r.gzip_sha256, e.gzip_sha256), coalesce(r.error, e.error), extract(epoch FROM e.expired_at), e.owner,
               e.expired_reason = 'evicted'
        FROM gateway.exports e LEFT JOIN gateway.runs r ON r.id = e.run_id
        """

    static func record(_ row: [String?]) -> Record? {
        guard row.count >= 16 else { return nil }
        func date(_ i: Int) -> Date? { row[i].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } }
        guard let id = row[0].flatMap(UUID.init(uuidString:)), let runID = row[1].flatMap(UUID.init(uuidString:)),
            let query = row[2], let createdAt = date(3), let status = row[4].flatMap(ExportLifecycle.Status.init(rawValue:))
        else { return nil }
        return Record(
            id: id, runID: runID, query: query, createdAt: createdAt, status: status, startedAt: date(5),
            completedAt: date(6), cancelledAt: date(7), expiredAt: date(14), rows: row[8].flatMap { Int($0) }, sizeBytes: row[9].flatMap { Int($0) },
            sha256: row[10], gzipSizeBytes: row[11].flatMap { Int($0) }, gzipSha256: row[12], error: row[13], owner: row[15],
            evicted: row.count > 16 && row[16] == "t"
        )
    }

    /// Expired exports stay as rows, so their ids answer 410 after a restart;
    /// `forgetExpired` drops them once they have been expired for `after`.
    /// `evicted`: expired early because its file made room in the cache.
    func markExpired(_ ids: [UUID], evicted: Bool = false) throws {
        guard !ids.isEmpty else { return }
        try self.run("expire") { db in
            try db.execute(
                """
                UPDATE gateway.exports SET expired_at = coalesce(expired_at, now()),
                    expired_reason = CASE WHEN expired_at IS NULL AND $2 THEN 'evicted' ELSE expired_reason END
                WHERE id = ANY($1::uuid[])
                """, parameters: [Self.array(ids.map(\.uuidString)), evicted ? "true" : "false"])
        }
    }

    /// The planner's rows and width for an export's query (`EXPLAIN`'s top
    /// line), on a journal connection; nil when the plan cannot be had at
    /// once: the table is locked (an `ALTER`, a test's lock), and waiting
    /// for it would hold the request.
    func planEstimate(_ explain: (PostgresConnection) throws -> String) throws -> (rows: Int, width: Int)? {
        try self.transaction("estimate") { db in
            try db.execute("SET LOCAL lock_timeout = '200ms'")
            // A lock wait that ran out is no estimate, not a failure (the
            // aborted transaction's COMMIT is a rollback).
            guard let line = (try? db.execute(try explain(db))).flatMap(Self.cell),
                let rows = ExportQuery.estimatedRows(fromPlanLine: line),
                let range = line.range(of: " width="),
                let width = Int(line[range.upperBound...].prefix(while: \.isNumber))
            else { return nil }
            return (rows, width)
        }
    }

    func forgetExpired(after seconds: Int) throws {
        try self.run("forget expired") { db in
            try db.execute("DELETE FROM gateway.exports WHERE expired_at < now() - make_interval(secs => $1::double precision)", parameters: [String(seconds)])
        }
    }

    /// Runs `body` on a pooled connection, and once more on a fresh one if
    /// that fails; throws `Unavailable` when both fail.
    func run<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
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
