import Cache
import Foundation

/// The run queue, kept in PostgreSQL (`gateway.runs`) so that several
/// gateways on one database are one service: the table is the shared queue,
/// and its rows are claimed with leases. This file holds the claims, leases
/// and renewals, and what the owner of a run does with it (publish, fail,
/// release, requeue), all fenced by its claim; admissions, which make or
/// join runs, are with the export rows (`ExportJournal+Exports.swift`).
///
/// - A run is `queued` until a gateway claims it (`FOR UPDATE SKIP LOCKED`,
///   oldest first): then it is `running` there, with the gateway's
///   INSTANCE_ID, an attempt number and a lease the gateway renews every
///   second along with the progress. A lease that runs out (the gateway was
///   killed or cut off) lets any gateway claim the run again: it runs anew
///   from the start, under the same id, as the next attempt.
/// - Every change a gateway makes as the owner of a run is fenced by its
///   instance and attempt: a gateway that lost its lease cannot complete,
///   fail or renew what another now runs.
/// - At most one queued or running run per canonical request may be joined
///   (a unique index): identical requests on any gateway join it.
/// - `pg_notify` tells the other gateways (`ClusterChannel`): `.queue`
///   (work to claim), `.runs` (a run's state changed; payload: its id) and
///   `.exports` (an export was cancelled or deleted; payload: its id).
/// - Files in `objects/` are published and removed under an advisory lock
///   on their hash, with the rows that refer to them, so no gateway removes
///   a file another's export has just come to refer to (removal:
///   `ExportJournal+Objects.swift`).
extension ExportJournal {
    /// One row of `gateway.runs`.
    struct RunRow: Sendable {
        let id: UUID
        /// `ExportRequest.cacheKey`: identical requests have the same.
        let requestKey: String
        /// `ExportRequest.canonicalQuery`: what the run reads, as a query string.
        let query: String
        let state: ExportLifecycle.Status
        let instance: String?
        let attempt: Int
        /// Running, and its lease ran out: its gateway stopped renewing it.
        let leaseExpired: Bool
        /// Relative to CACHE_DIR: `partial/<instance>/<run>-<attempt>.csv.partial`.
        let partialPath: String?
        let startedAt: Date?
        let completedAt: Date?
        let rowsWritten: Int
        let bytesWritten: Int
        let totalRows: Int?
        let sizeBytes: Int?
        let sha256: String?
        let gzipSizeBytes: Int?
        let gzipSha256: String?
        let error: String?

        /// The partial file's name in its instance's folder, without `.csv.partial`.
        var partialName: String? {
            guard let path = self.partialPath, let last = path.split(separator: "/").last, last.hasSuffix(".csv.partial") else { return nil }
            return String(last.dropLast(".csv.partial".count))
        }
    }

    /// The columns of a run's row, as `RunRow(row:)` reads them (`r` is `gateway.runs`).
    static let runColumns = """
        r.id, r.request_key, r.state, r.instance, r.attempt, coalesce(r.lease_until < now(), false) AS lease_expired, r.partial_path,
        extract(epoch FROM r.started_at) AS started_at, extract(epoch FROM r.completed_at) AS completed_at, r.rows_written, r.bytes_written,
        r.total_rows, r.size_bytes, r.sha256, r.gzip_size_bytes, r.gzip_sha256, r.error, r.query
        """

    /// Who claims a run: this gateway, for how long, and where it writes.
    struct Claim: Sendable {
        let instance: String
        let leaseSeconds: Int
        /// This gateway's partial folder, relative to CACHE_DIR.
        let partialFolder: String
    }

    // MARK: Claims and leases

    /// Claims the next queued run, or a running one whose lease ran out,
    /// for `claim.instance`; nil when there is none. Fair between tokens:
    /// the oldest run of the token (the run's `owner`) with the fewest runs
    /// running now in the whole cluster, so a token's export starts as soon
    /// as a worker frees, however long another token's queue is.
    func claimNext(_ claim: Claim) throws -> RunRow? {
        try self.inTransactionRetryingOnce("claim") { db -> RunRow? in
            let claimed = try db.rows(
                """
                WITH running AS (
                    SELECT owner, count(*) AS n FROM gateway.runs WHERE state = 'running' AND lease_until >= now() GROUP BY owner
                ), next AS (
                    SELECT q.id FROM gateway.runs q LEFT JOIN running ON running.owner IS NOT DISTINCT FROM q.owner
                    WHERE q.state = 'queued' OR (q.state = 'running' AND q.lease_until < now())
                    ORDER BY coalesce(running.n, 0), q.created_at LIMIT 1 FOR UPDATE OF q SKIP LOCKED
                )
                UPDATE gateway.runs r SET state = 'running', instance = $1, attempt = r.attempt + 1,
                    lease_until = now() + make_interval(secs => $2::double precision),
                    partial_path = $3::text || '/' || r.id || '-' || (r.attempt + 1) || '.csv.partial',
                    started_at = now(), rows_written = 0, bytes_written = 0, total_rows = NULL
                FROM next WHERE r.id = next.id
                RETURNING \(Self.runColumns)
                """, parameters: [claim.instance, String(claim.leaseSeconds), claim.partialFolder])
            guard let row = claimed.first.flatMap(RunRow.init(row:)) else { return nil }
            try db.execute(
                "UPDATE gateway.exports SET status = 'running', started_at = now() WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status IN ('queued', 'running')",
                parameters: [row.id.uuidString])
            try Self.notify(db, .runs, about: row.id)
            return row
        }
    }

    /// The progress of one run this gateway is running.
    struct Renewal: Sendable {
        let id: UUID
        let attempt: Int
        let rows: Int
        let bytes: Int
        let totalRows: Int?
    }

    /// Renews the leases of the runs this gateway runs and records their
    /// progress; returns the ids it still holds (a run missing from the
    /// answer was cancelled, or claimed by another gateway after the lease ran out).
    func renew(_ renewals: [Renewal], instance: String, leaseSeconds: Int) throws -> Set<UUID> {
        guard !renewals.isEmpty else { return [] }
        let rows = try self.withRetryOnce("renew") { db in
            try db.rows(
                """
                UPDATE gateway.runs r SET lease_until = now() + make_interval(secs => $2::double precision),
                    rows_written = u.rows, bytes_written = u.bytes, total_rows = u.total
                FROM unnest($3::uuid[], $4::int[], $5::bigint[], $6::bigint[], $7::bigint[]) AS u(id, attempt, rows, bytes, total)
                WHERE r.id = u.id AND r.attempt = u.attempt AND r.instance = $1 AND r.state = 'running'
                RETURNING r.id
                """,
                parameters: [
                    instance, String(leaseSeconds), Self.array(renewals.map(\.id.uuidString)), Self.array(renewals.map { String($0.attempt) }),
                    Self.array(renewals.map { String($0.rows) }), Self.array(renewals.map { String($0.bytes) }), Self.array(renewals.map { $0.totalRows.map(String.init) ?? "NULL" }),
                ])
        }
        return Set(rows.compactMap { $0.uuid("id") })
    }

    /// Connections of other processes under this gateway's
    /// `application_name`: another gateway started with the same INSTANCE_ID.
    func otherConnections(of instance: String) throws -> Int {
        let rows = try self.withRetryOnce("instance check") { db in
            try db.rows(
                "SELECT count(*) AS connections FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                parameters: ["gateway:" + instance])
        }
        return rows.first?.int("connections") ?? 0
    }

    /// At start: the runs this instance was running when it stopped are
    /// queued again at once (it runs nothing yet), rather than after their lease.
    func requeueOwn(instance: String) throws -> Int {
        try self.inTransactionRetryingOnce("requeue") { db in
            let rows = try db.execute(
                "UPDATE gateway.runs SET state = 'queued', lease_until = NULL, partial_path = NULL WHERE state = 'running' AND instance = $1 RETURNING id",
                parameters: [instance])
            if !rows.isEmpty { try Self.notify(db, .queue) }
            return rows.count
        }
    }

    /// Gives a run back to the queue (this gateway is stopping): another
    /// gateway, or this one's next start, runs it again.
    func release(_ runID: UUID, attempt: Int, instance: String) throws {
        try self.inTransactionRetryingOnce("release") { db in
            let released = try db.execute(
                "UPDATE gateway.runs SET state = 'queued', lease_until = NULL, partial_path = NULL WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id",
                parameters: [runID.uuidString, instance, String(attempt)])
            guard !released.isEmpty else { return }
            try db.execute("UPDATE gateway.exports SET status = 'queued' WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status = 'running'", parameters: [runID.uuidString])
            try Self.notify(db, .queue)
            try Self.notify(db, .runs, about: runID)
        }
    }

    /// The run failed on this gateway (fenced by its claim).
    /// True when this attempt still held the run and its failure is
    /// recorded; false when fenced out (another attempt runs it, or it was
    /// cancelled or ended meanwhile), and nothing changed.
    @discardableResult
    func fail(_ runID: UUID, attempt: Int, instance: String, message: String) throws -> Bool {
        try self.inTransactionRetryingOnce("fail") { db in
            let failed = try db.execute(
                "UPDATE gateway.runs SET state = 'failed', error = $4, completed_at = now(), lease_until = NULL WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id",
                parameters: [runID.uuidString, instance, String(attempt), message])
            guard !failed.isEmpty else { return false }
            try db.execute(
                "UPDATE gateway.exports SET status = 'failed', error = $2, completed_at = now() WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status IN ('queued', 'running')",
                parameters: [runID.uuidString, message])
            try Self.notify(db, .runs, about: runID)
            return true
        }
    }

    /// Publishes a run's file: under the lock of its hash, the run (if this
    /// gateway still holds it) and its exports say completed, and `rename`
    /// gives the file its name in `objects/`, in one transaction. Nil when the
    /// claim was lost (nothing renamed): the caller discards the file.
    func publish(_ sealed: SealedFile, runID: UUID, attempt: Int, instance: String, rows: Int, rename: () throws -> PublishedFile) throws -> PublishedFile? {
        try self.inTransactionRetryingOnce("publish") { db -> PublishedFile? in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sealed.sha256])
            let updated = try db.execute(
                """
                UPDATE gateway.runs SET state = 'completed', completed_at = now(), lease_until = NULL, rows_written = $4::bigint,
                    bytes_written = $5::bigint, total_rows = $4::bigint, size_bytes = $5::bigint, sha256 = $6
                WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id
                """, parameters: [runID.uuidString, instance, String(attempt), String(rows), String(sealed.size), sealed.sha256])
            guard !updated.isEmpty else { return nil }
            // The rename into `objects/` is inside this transaction on
            // purpose: it holds the lock of the file's hash from before the
            // file has its name until the rows that refer to it are
            // committed, so a gateway removing unreferenced files
            // (`removeUnreferenced`, under the same lock) can never see the
            // file named but unreferenced, and delete what this export has
            // just come to refer to. Nothing is renamed when the claim was lost.
            let published = try rename()
            try db.execute(
                """
                UPDATE gateway.exports e SET status = 'completed', started_at = r.started_at, completed_at = r.completed_at,
                    rows_written = r.rows_written, size_bytes = r.size_bytes, sha256 = r.sha256
                FROM gateway.runs r WHERE r.id = $1::uuid AND e.run_id = r.id AND e.cancelled_at IS NULL
                """, parameters: [runID.uuidString])
            try Self.notify(db, .runs, about: runID)
            return published
        }
    }

    /// Records a run's gzip form, under the lock of its hash, with `rename`
    /// giving the file its name.
    func publishGzip(_ sealed: SealedFile, runID: UUID, rename: () throws -> PublishedFile) throws -> PublishedFile {
        try self.inTransactionRetryingOnce("gzip") { db in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sealed.sha256])
            // Renamed inside the transaction, under the lock of its hash, for
            // the reason `publish` gives: the file and the rows that refer
            // to it appear together for any gateway removing files.
            let published = try rename()
            let parameters = [runID.uuidString, String(published.size), published.sha256]
            try db.execute("UPDATE gateway.runs SET gzip_size_bytes = $2::bigint, gzip_sha256 = $3 WHERE id = $1::uuid", parameters: parameters)
            try db.execute("UPDATE gateway.exports SET gzip_size_bytes = $2::bigint, gzip_sha256 = $3 WHERE run_id = $1::uuid", parameters: parameters)
            return published
        }
    }

    /// The rows of these runs (those that still exist).
    func fetchRuns(_ ids: [UUID]) throws -> [RunRow] {
        guard !ids.isEmpty else { return [] }
        return try self.withRetryOnce("runs") { db in
            try db.rows(
                "SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = ANY($1::uuid[])",
                parameters: [Self.array(ids.map(\.uuidString))])
        }.compactMap(RunRow.init(row:))
    }

    /// The gateways that hold a lease now (they may be writing partial files).
    func liveInstances() throws -> Set<String> {
        let rows = try self.withRetryOnce("instances") { db in
            try db.rows("SELECT DISTINCT instance FROM gateway.runs WHERE state = 'running' AND lease_until > now() AND instance IS NOT NULL")
        }
        return Set(rows.compactMap { $0.text("instance") })
    }

    /// Ended runs no export refers to any more, past CACHE_TTL, go.
    ///
    /// Under the admission lock: an admission joining a completed run locks
    /// it only FOR SHARE, and a DELETE that had read "no export refers to
    /// it" before that admission's export row committed would then go ahead
    /// and remove the run under the new export (PostgreSQL does not check a
    /// row that was only locked again). The export then answered 404 on
    /// every other gateway: an acknowledged export gone.
    func forgetRuns(olderThan seconds: Int) throws {
        try self.inTransactionRetryingOnce("forget runs") { db in
            try db.execute("SELECT pg_advisory_xact_lock(\(Self.admissionLock))")
            try db.execute(
                """
                DELETE FROM gateway.runs r WHERE r.state IN ('completed', 'failed', 'cancelled')
                  AND r.completed_at < now() - make_interval(secs => $1::double precision)
                  AND NOT EXISTS (SELECT 1 FROM gateway.exports e WHERE e.run_id = r.id)
                """, parameters: [String(seconds)])
        }
    }

    /// A finished run whose file is gone from the cache is queued again
    /// (an earlier version's run gets its row here).
    func requeueLost(_ runID: UUID, key: String, query: String) throws {
        try self.inTransactionRetryingOnce("requeue lost") { db in
            try db.execute(
                """
                INSERT INTO gateway.runs AS r (id, request_key, query, state, joinable) VALUES ($1::uuid, $2, $3, 'queued', false)
                ON CONFLICT (id) DO UPDATE SET state = 'queued', instance = NULL, lease_until = NULL, partial_path = NULL,
                    size_bytes = NULL, sha256 = NULL, completed_at = NULL, joinable = false
                WHERE r.state = 'completed'
                """, parameters: [runID.uuidString, key, query])
            try db.execute(
                "UPDATE gateway.exports SET status = 'queued', completed_at = NULL, size_bytes = NULL, sha256 = NULL WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status = 'completed'",
                parameters: [runID.uuidString])
            try Self.notify(db, .queue)
        }
    }
}

extension ExportJournal.RunRow {
    /// Decodes a row of `ExportJournal.runColumns` by its column names; nil
    /// when a column every run has is missing.
    init?(row: ResultRow) {
        guard let id = row.uuid("id"), let key = row.text("request_key"), let query = row.text("query"),
            let state = row.text("state").flatMap(ExportLifecycle.Status.init(rawValue:))
        else { return nil }
        self.init(
            id: id, requestKey: key, query: query, state: state, instance: row.text("instance"), attempt: row.int("attempt") ?? 0,
            leaseExpired: row.bool("lease_expired"), partialPath: row.text("partial_path"), startedAt: row.date("started_at"),
            completedAt: row.date("completed_at"), rowsWritten: row.int("rows_written") ?? 0, bytesWritten: row.int("bytes_written") ?? 0,
            totalRows: row.int("total_rows"), sizeBytes: row.int("size_bytes"), sha256: row.text("sha256"),
            gzipSizeBytes: row.int("gzip_size_bytes"), gzipSha256: row.text("gzip_sha256"), error: row.text("error"))
    }
}
