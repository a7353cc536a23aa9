import Foundation

/// The export rows (`gateway.exports`): admitting an export (joining a run
/// or making one, within the cluster's bounds), reading the rows back,
/// cancelling and deleting one, and marking them expired. An export's row
/// carries its run's id; its state is read together with the run's
/// (`ExportJournal+Runs.swift`), which the cluster keeps up to date.
extension ExportJournal {
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

    /// An export's row with its run's state (from `gateway.runs`, where the
    /// cluster keeps it; an earlier version's rows have only their own),
    /// with the columns `Record(row:)` reads.
    static let selectExports = """
        SELECT e.id, e.run_id, e.query, extract(epoch FROM e.created_at) AS created_at,
               CASE WHEN e.cancelled_at IS NOT NULL THEN 'cancelled' ELSE coalesce(r.state, e.status) END AS status,
               extract(epoch FROM coalesce(r.started_at, e.started_at)) AS started_at,
               extract(epoch FROM coalesce(r.completed_at, e.completed_at)) AS completed_at,
               extract(epoch FROM e.cancelled_at) AS cancelled_at,
               CASE WHEN coalesce(r.state, e.status) = 'completed' THEN coalesce(r.rows_written, e.rows_written) END AS rows_written,
               coalesce(r.size_bytes, e.size_bytes) AS size_bytes, coalesce(r.sha256, e.sha256) AS sha256,
               coalesce(r.gzip_size_bytes, e.gzip_size_bytes) AS gzip_size_bytes, coalesce(r.gzip_sha256, e.gzip_sha256) AS gzip_sha256,
               coalesce(r.error, e.error) AS error, extract(epoch FROM e.expired_at) AS expired_at, e.owner,
               e.expired_reason = 'evicted' AS evicted
        FROM gateway.exports e LEFT JOIN gateway.runs r ON r.id = e.run_id
        """

    /// Creates the schema if needed and reads every export back.
    func load() throws -> [Record] {
        try self.withRetryOnce("load") { db in
            try Self.migrate(db)
            return try db.rows(Self.selectExports + " ORDER BY e.created_at")
        }.compactMap(Record.init(row:))
    }

    /// One export and its run, as another gateway may have made them.
    func fetchExport(_ id: UUID) throws -> (Record, RunRow?)? {
        try self.withRetryOnce("look up") { db -> (Record, RunRow?)? in
            guard let record = try db.rows(Self.selectExports + " WHERE e.id = $1::uuid", parameters: [id.uuidString]).first.flatMap(Record.init(row:)) else { return nil }
            let run = try db.rows("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = $1::uuid", parameters: [record.runID.uuidString]).first.flatMap(RunRow.init(row:))
            return (record, run)
        }
    }

    /// Which of these exports still exist, and which of them are cancelled.
    func exportStates(_ ids: [UUID]) throws -> [UUID: Bool] {
        guard !ids.isEmpty else { return [:] }
        let rows = try self.withRetryOnce("exports") { db in
            try db.rows(
                "SELECT id, cancelled_at IS NOT NULL AS cancelled FROM gateway.exports WHERE id = ANY($1::uuid[])",
                parameters: [Self.array(ids.map(\.uuidString))])
        }
        var states: [UUID: Bool] = [:]
        for row in rows {
            if let id = row.uuid("id") { states[id] = row.bool("cancelled") }
        }
        return states
    }

    // MARK: Admission

    /// What a new export asks of the shared queue.
    struct Admission: Sendable {
        let exportID: UUID
        /// The id of the run made if none can be joined.
        let runID: UUID
        let key: String
        let query: String
        let owner: String?
        let createdAt: Date
        /// `Cache-Control: no-cache`: a new run, which later requests join.
        let fresh: Bool
        let cacheTTLSeconds: Int
        /// Export ids that may wait or run at once in the cluster.
        let activeLimit: Int
        /// Export ids of `owner` that may wait or run at once in the cluster
        /// (nil: no bound, as without tokens).
        let ownerActiveLimit: Int?
        /// Admissions of `owner` per minute (nil: no bound).
        let ownerPerMinute: Int?
        /// When this gateway has a free worker: the new run is claimed by it at once.
        let claim: Claim?
    }

    enum Admitted: Sendable {
        /// Joined a queued, running or fresh completed run.
        case joined(RunRow)
        /// A new run (running here when `Admission.claim` was given, else queued).
        case created(RunRow)
        case queueFull
        /// The owner has `ownerActiveLimit` export ids waiting or running.
        case ownerQueueFull
        /// The owner has made `ownerPerMinute` admissions this minute; its
        /// minute ends in this many seconds.
        case ownerRateLimited(retryAfterSeconds: Int)
    }

    /// Admits one export: joins the run that answers its request (queued,
    /// running, or completed within CACHE_TTL with its file still there,
    /// which `fileExists` checks), or makes a new run, or refuses when the
    /// cluster's queue is full. Admissions are serialized by an advisory
    /// lock, so the bound and the one-run-per-request rule hold across gateways.
    func admit(_ a: Admission, fileExists: (String, Int) -> Bool) throws -> Admitted {
        try self.inTransactionRetryingOnce("admit") { db -> Admitted in
            try db.execute("SELECT pg_advisory_xact_lock(\(Self.admissionLock))")
            // The same admission again: `inTransactionRetryingOnce` runs a body a second
            // time when the first COMMIT's outcome was unknown (the
            // connection dropped), and that COMMIT may have landed. Then the
            // export is there: answer with its run rather than admit it twice
            // (a second run no export refers to, or a 429 for an export that exists).
            if let runID = try db.rows("SELECT run_id FROM gateway.exports WHERE id = $1::uuid", parameters: [a.exportID.uuidString]).first?.text("run_id"),
                let row = try db.rows("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = $1::uuid", parameters: [runID]).first.flatMap(RunRow.init(row:))
            {
                return row.id == a.runID ? .created(row) : .joined(row)
            }
            let active =
                "SELECT count(*) AS active FROM gateway.exports e JOIN gateway.runs r ON r.id = e.run_id WHERE r.state IN ('queued', 'running') AND e.cancelled_at IS NULL AND e.expired_at IS NULL"
            func isFull() throws -> Bool { (try db.rows(active).first?.int("active") ?? 0) >= a.activeLimit }
            // The owner's own bounds first: past them only that token is refused.
            if let owner = a.owner, let perMinute = a.ownerPerMinute {
                let window = try db.rows(
                    "SELECT admissions, ceil(extract(epoch FROM window_start + interval '1 minute' - now())) AS retry_after FROM gateway.token_windows WHERE owner = $1 AND window_start > now() - interval '1 minute'",
                    parameters: [owner])
                if let row = window.first, let used = row.int("admissions"), used >= perMinute {
                    return .ownerRateLimited(retryAfterSeconds: max(1, row.double("retry_after").map { Int($0) } ?? 60))
                }
            }
            if let owner = a.owner, let limit = a.ownerActiveLimit {
                let mine = try db.rows(active + " AND e.owner = $1", parameters: [owner]).first?.int("active") ?? 0
                if mine >= limit { return .ownerQueueFull }
            }
            /// Counts this admission in the owner's minute.
            func countAdmission() throws {
                guard let owner = a.owner, a.ownerPerMinute != nil else { return }
                try db.execute(
                    """
                    INSERT INTO gateway.token_windows AS w (owner, window_start, admissions) VALUES ($1, now(), 1)
                    ON CONFLICT (owner) DO UPDATE SET
                        admissions = CASE WHEN w.window_start <= now() - interval '1 minute' THEN 1 ELSE w.admissions + 1 END,
                        window_start = CASE WHEN w.window_start <= now() - interval '1 minute' THEN now() ELSE w.window_start END
                    """, parameters: [owner])
            }
            func insertExport(of run: UUID) throws {
                try db.execute(
                    """
                    INSERT INTO gateway.exports (id, run_id, query, created_at, status, started_at, completed_at, rows_written, size_bytes, sha256, error, gzip_size_bytes, gzip_sha256, owner)
                    SELECT $1::uuid, r.id, r.query, to_timestamp($2::double precision), r.state, r.started_at, r.completed_at,
                           CASE WHEN r.state = 'completed' THEN r.rows_written END, r.size_bytes, r.sha256, r.error, r.gzip_size_bytes, r.gzip_sha256, $3
                    FROM gateway.runs r WHERE r.id = $4::uuid
                    ON CONFLICT (id) DO NOTHING
                    """, parameters: [a.exportID.uuidString, String(a.createdAt.timeIntervalSince1970), a.owner, run.uuidString])
            }
            if !a.fresh {
                // FOR SHARE: a claim, a completion or a cancel of that run waits for
                // this export's row, and then sees it (each of their statements
                // after the wait reads anew).
                if let row = try db.rows(
                    "SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.request_key = $1 AND r.joinable AND r.state IN ('queued', 'running') LIMIT 1 FOR SHARE OF r", parameters: [a.key]
                ).first.flatMap(RunRow.init(row:)) {
                    if try isFull() { return .queueFull }
                    try insertExport(of: row.id)
                    try countAdmission()
                    return .joined(row)
                }
                let done = try db.rows(
                    """
                    SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.request_key = $1 AND r.joinable AND r.state = 'completed'
                      AND r.completed_at > now() - make_interval(secs => $2::double precision) ORDER BY r.completed_at DESC LIMIT 1 FOR SHARE OF r
                    """, parameters: [a.key, String(a.cacheTTLSeconds)]
                ).first.flatMap(RunRow.init(row:))
                if let done, let sha = done.sha256, let size = done.sizeBytes {
                    // Shared: a gateway removing that file waits, then sees this export.
                    try db.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))", parameters: [sha])
                    if fileExists(sha, size) {
                        try insertExport(of: done.id)
                        try countAdmission()
                        return .joined(done)
                    }
                }
            }
            if try isFull() { return .queueFull }
            if a.fresh {
                try db.execute("UPDATE gateway.runs SET joinable = false WHERE request_key = $1 AND joinable AND state IN ('queued', 'running')", parameters: [a.key])
            }
            let inserted = try db.rows(
                """
                INSERT INTO gateway.runs AS r (id, request_key, query, owner, state, instance, attempt, lease_until, partial_path, started_at)
                VALUES ($1::uuid, $2, $6, $7, CASE WHEN $3::text IS NULL THEN 'queued' ELSE 'running' END, $3, CASE WHEN $3::text IS NULL THEN 0 ELSE 1 END,
                        CASE WHEN $3::text IS NULL THEN NULL ELSE now() + make_interval(secs => $4::double precision) END,
                        CASE WHEN $3::text IS NULL THEN NULL ELSE $5::text || '/' || $1::uuid || '-1.csv.partial' END,
                        CASE WHEN $3::text IS NULL THEN NULL ELSE now() END)
                ON CONFLICT (id) DO UPDATE SET id = r.id
                RETURNING \(Self.runColumns)
                """,
                parameters: [a.runID.uuidString, a.key, a.claim?.instance, a.claim.map { String($0.leaseSeconds) } ?? "0", a.claim?.partialFolder ?? "", a.query, a.owner])
            guard let row = inserted.first.flatMap(RunRow.init(row:)) else { throw Unavailable(details: "the new run was not returned") }
            try insertExport(of: row.id)
            try countAdmission()
            if row.state == .queued { try Self.notify(db, .queue) }
            return .created(row)
        }
    }

    // MARK: Cancel, delete

    /// Cancels one export (durable when this returns), and its run when no
    /// export of it on any gateway still wants it; the run's gateway hears
    /// of it on `ClusterChannel.runs`. Returns whether the run was
    /// cancelled, and its id.
    func cancelExport(_ id: UUID) throws -> (runID: UUID?, runCancelled: Bool) {
        try self.inTransactionRetryingOnce("cancel") { db in
            guard let runID = try db.rows("SELECT run_id FROM gateway.exports WHERE id = $1::uuid", parameters: [id.uuidString]).first?.uuid("run_id") else {
                return (nil, false)
            }
            // The run's row first, as every other transaction takes the two
            // tables (a claim, a completion: the run, then its exports), and
            // an admission joining it holds it (FOR SHARE) until its export's
            // row is there, which the statements below, made after, see.
            try db.execute("SELECT 1 FROM gateway.runs WHERE id = $1::uuid FOR UPDATE", parameters: [runID.uuidString])
            try db.execute("UPDATE gateway.exports SET status = 'cancelled', cancelled_at = coalesce(cancelled_at, now()) WHERE id = $1::uuid", parameters: [id.uuidString])
            let cancelled = try db.execute(
                """
                UPDATE gateway.runs r SET state = 'cancelled', completed_at = now(), lease_until = NULL
                WHERE r.id = $1::uuid AND r.state IN ('queued', 'running')
                  AND NOT EXISTS (SELECT 1 FROM gateway.exports e WHERE e.run_id = r.id AND e.cancelled_at IS NULL AND e.expired_at IS NULL)
                RETURNING r.id
                """, parameters: [runID.uuidString])
            if !cancelled.isEmpty { try Self.notify(db, .runs, about: runID) }
            try Self.notify(db, .exports, about: id)
            return (runID, !cancelled.isEmpty)
        }
    }

    /// Deletes an export's row and tells the other gateways.
    func deleteExport(_ id: UUID) throws {
        try self.inTransactionRetryingOnce("delete") { db in
            try db.execute("DELETE FROM gateway.exports WHERE id = $1::uuid", parameters: [id.uuidString])
            try Self.notify(db, .exports, about: id)
        }
    }

    // MARK: Expiry

    /// Expired exports stay as rows, so their ids answer 410 after a restart;
    /// `forgetExpired` drops them once they have been expired for `after`.
    /// `evicted`: expired early because its file made room in the cache.
    func markExpired(_ ids: [UUID], evicted: Bool = false) throws {
        guard !ids.isEmpty else { return }
        try self.withRetryOnce("expire") { db in
            try db.execute(
                """
                UPDATE gateway.exports SET expired_at = coalesce(expired_at, now()),
                    expired_reason = CASE WHEN expired_at IS NULL AND $2 THEN 'evicted' ELSE expired_reason END
                WHERE id = ANY($1::uuid[])
                """, parameters: [Self.array(ids.map(\.uuidString)), evicted ? "true" : "false"])
        }
    }

    func forgetExpired(after seconds: Int) throws {
        try self.withRetryOnce("forget expired") { db in
            try db.execute("DELETE FROM gateway.exports WHERE expired_at < now() - make_interval(secs => $1::double precision)", parameters: [String(seconds)])
        }
    }

    // MARK: Estimates

    /// The planner's rows and width for an export's query (`EXPLAIN`'s top
    /// line), on a journal connection; nil when the plan cannot be had at
    /// once: the table is locked (an `ALTER`, a test's lock), and waiting
    /// for it would hold the request.
    func planEstimate(_ explain: (PostgresConnection) throws -> String) throws -> (rows: Int, width: Int)? {
        try self.inTransactionRetryingOnce("estimate") { db in
            try db.execute("SET LOCAL lock_timeout = '200ms'")
            // A lock wait that ran out is no estimate, not a failure (the
            // aborted transaction's COMMIT is a rollback).
            guard let line = (try? db.rows(try explain(db)))?.first?.text("QUERY PLAN"),
                let rows = ExportQuery.estimatedRows(fromPlanLine: line),
                let range = line.range(of: " width="),
                let width = Int(line[range.upperBound...].prefix(while: \.isNumber))
            else { return nil }
            return (rows, width)
        }
    }
}

extension ExportJournal.Record {
    /// Decodes a row of `ExportJournal.selectExports` by its column names;
    /// nil when a column every export has is missing.
    init?(row: ResultRow) {
        guard let id = row.uuid("id"), let runID = row.uuid("run_id"), let query = row.text("query"),
            let createdAt = row.date("created_at"), let status = row.text("status").flatMap(ExportLifecycle.Status.init(rawValue:))
        else { return nil }
        self.init(
            id: id, runID: runID, query: query, createdAt: createdAt, status: status, startedAt: row.date("started_at"),
            completedAt: row.date("completed_at"), cancelledAt: row.date("cancelled_at"), expiredAt: row.date("expired_at"),
            rows: row.int("rows_written"), sizeBytes: row.int("size_bytes"), sha256: row.text("sha256"),
            gzipSizeBytes: row.int("gzip_size_bytes"), gzipSha256: row.text("gzip_sha256"), error: row.text("error"),
            owner: row.text("owner"), evicted: row.bool("evicted"))
    }
}
