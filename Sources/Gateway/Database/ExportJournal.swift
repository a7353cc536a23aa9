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
/// moves, `cancelled` when a client cancels, the gzip form's hash when it is
/// published; the row is deleted with the export. A graceful shutdown
/// writes nothing, so what was queued or running is queued again on start.
///
/// Every call blocks (one connection, under a lock that also orders the
/// writes): call it from a worker thread or the thread pool. A failed write
/// is logged, not thrown: the export itself goes on.
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
        CREATE INDEX IF NOT EXISTS exports_run_id_idx ON gateway.exports (run_id);
        """

    private let databaseURL: String
    private let logger: Logger
    /// The connection, opened on first use and again after a failure; the
    /// Mutex owns it and every use is under it.
    private let connection = Mutex<PostgresConnection?>(nil)

    init(databaseURL: String, logger: Logger) {
        self.databaseURL = databaseURL
        self.logger = logger
    }

    /// Creates the schema if needed and reads every export back.
    func load() throws -> [Record] {
        try self.connection.withLock { connection in
            let db = try self.open(&connection)
            try db.execute("SELECT pg_advisory_xact_lock(7573657273656565); " + Self.schema)
            let rows = try db.execute("""
                SELECT id, run_id, query, extract(epoch FROM created_at), status, extract(epoch FROM started_at),
                       extract(epoch FROM completed_at), extract(epoch FROM cancelled_at), rows_written, size_bytes,
                       sha256, gzip_size_bytes, gzip_sha256, error, extract(epoch FROM expired_at)
                FROM gateway.exports ORDER BY created_at
                """)
            return rows.compactMap { row in
                func date(_ i: Int) -> Date? { row[i].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } }
                guard let id = row[0].flatMap(UUID.init(uuidString:)), let runID = row[1].flatMap(UUID.init(uuidString:)),
                    let query = row[2], let createdAt = date(3), let status = row[4].flatMap(ExportLifecycle.Status.init(rawValue:))
                else { return nil }
                return Record(
                    id: id, runID: runID, query: query, createdAt: createdAt, status: status, startedAt: date(5),
                    completedAt: date(6), cancelledAt: date(7), expiredAt: date(14), rows: row[8].flatMap { Int($0) }, sizeBytes: row[9].flatMap { Int($0) },
                    sha256: row[10], gzipSizeBytes: row[11].flatMap { Int($0) }, gzipSha256: row[12], error: row[13]
                )
            }
        }
    }

    /// A new export, with its run's state as it is now (read under the lock,
    /// so a run update cannot slip between the read and the insert).
    func insert(_ job: ExportJob) {
        self.write("insert") { db in
            let run = job.run.snapshot()
            try db.execute(
                """
                INSERT INTO gateway.exports (id, run_id, query, created_at, status, started_at, completed_at, rows_written, size_bytes, sha256, error, gzip_size_bytes, gzip_sha256)
                VALUES ($1, $2, $3, to_timestamp($4), $5, to_timestamp($6), to_timestamp($7), $8, $9, $10, $11, $12, $13)
                ON CONFLICT (id) DO NOTHING
                """,
                parameters: [job.id.uuidString, job.run.id.uuidString, job.request.canonicalQuery, Self.epoch(job.createdAt)]
                    + Self.runState(run) + [run.gzip.map { String($0.size) }, run.gzip?.sha256])
        }
    }

    /// The run's state, on every export of it that a client has not cancelled.
    func update(_ run: ExportRun) {
        self.write("update") { db in
            try db.execute(
                """
                UPDATE gateway.exports SET status = $2, started_at = to_timestamp($3), completed_at = to_timestamp($4),
                    rows_written = $5, size_bytes = $6, sha256 = $7, error = $8
                WHERE run_id = $1 AND cancelled_at IS NULL
                """,
                parameters: [run.id.uuidString] + Self.runState(run.snapshot()))
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

    func recordGzip(_ file: PublishedFile, of run: ExportRun) {
        self.write("gzip") { db in
            try db.execute("UPDATE gateway.exports SET gzip_size_bytes = $2, gzip_sha256 = $3 WHERE run_id = $1",
                parameters: [run.id.uuidString, String(file.size), file.sha256])
        }
    }

    func markCancelled(_ job: ExportJob) {
        self.write("cancel") { db in
            try db.execute("UPDATE gateway.exports SET status = 'cancelled', cancelled_at = now() WHERE id = $1", parameters: [job.id.uuidString])
        }
    }

    /// Expired exports stay as rows, so their ids answer 410 after a restart;
    /// `forgetExpired` drops them once they have been expired for `after`.
    func markExpired(_ ids: [UUID]) {
        guard !ids.isEmpty else { return }
        self.write("expire") { db in
            try db.execute("UPDATE gateway.exports SET expired_at = now() WHERE id = ANY($1::uuid[])",
                parameters: ["{" + ids.map(\.uuidString).joined(separator: ",") + "}"])
        }
    }

    func forgetExpired(after seconds: Int) {
        self.write("forget expired") { db in
            try db.execute("DELETE FROM gateway.exports WHERE expired_at < now() - make_interval(secs => $1::double precision)", parameters: [String(seconds)])
        }
    }

    func delete(_ id: UUID) {
        self.write("delete") { db in
            try db.execute("DELETE FROM gateway.exports WHERE id = $1", parameters: [id.uuidString])
        }
    }

    private func write(_ what: String, _ body: (PostgresConnection) throws -> Void) {
        self.connection.withLock { connection in
            do {
                try body(try self.open(&connection))
            } catch {
                // Drop the connection: the next write opens a new one.
                connection = nil
                self.logger.warning("export journal \(what) failed", metadata: ["error": "\(errorDetails(error))"])
            }
        }
    }

    private func open(_ connection: inout PostgresConnection?) throws -> PostgresConnection {
        if let connection { return connection }
        let db = try PostgresConnection(url: self.databaseURL)
        connection = db
        return db
    }

    private static func epoch(_ date: Date) -> String { String(date.timeIntervalSince1970) }
}
