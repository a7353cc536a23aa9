import Cache
import Foundation

/// The runs, kept in PostgreSQL (`gateway.runs`) so that several gateways on
/// one database are one service: the table is the shared queue, and its rows
/// are claimed with leases.
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
/// - `pg_notify` tells the other gateways: `gateway_queue` (work to claim),
///   `gateway_runs` (a run's state changed; payload: its id) and
///   `gateway_exports` (an export was cancelled or deleted; payload: its id).
/// - Files in `objects/` are published and removed under an advisory lock
///   on their hash, with the rows that refer to them, so no gateway removes
///   a file another's export has just come to refer to.
extension ExportJournal {
    static let runsSchema = """
        CREATE TABLE IF NOT EXISTS gateway.runs (
            id uuid PRIMARY KEY,
            request_key text NOT NULL,
            query text NOT NULL,
            state text NOT NULL,
            joinable boolean NOT NULL DEFAULT true,
            instance text,
            attempt integer NOT NULL DEFAULT 0,
            lease_until timestamptz,
            partial_path text,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            completed_at timestamptz,
            rows_written bigint NOT NULL DEFAULT 0,
            bytes_written bigint NOT NULL DEFAULT 0,
            total_rows bigint,
            size_bytes bigint,
            sha256 text,
            gzip_size_bytes bigint,
            gzip_sha256 text,
            error text
        );
        -- The token that made the run (its first export's owner): claims
        -- take the oldest run of the token with the fewest running.
        ALTER TABLE gateway.runs ADD COLUMN IF NOT EXISTS owner text;
        -- Each token's admissions in its current minute (TOKEN_CREATES_PER_MINUTE).
        CREATE TABLE IF NOT EXISTS gateway.token_windows (
            owner text PRIMARY KEY,
            window_start timestamptz NOT NULL,
            admissions integer NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_request ON gateway.runs (request_key)
            WHERE joinable AND state IN ('queued', 'running');
        CREATE INDEX IF NOT EXISTS runs_active ON gateway.runs (created_at) WHERE state IN ('queued', 'running');
        CREATE INDEX IF NOT EXISTS runs_completed ON gateway.runs (request_key, completed_at) WHERE state = 'completed';
        INSERT INTO gateway.runs (id, request_key, query, state, joinable, created_at)
            SELECT DISTINCT ON (e.run_id) e.run_id, e.query, e.query, 'queued', false, e.created_at FROM gateway.exports e
            WHERE e.status IN ('queued', 'running', 'cancelled') AND e.cancelled_at IS NULL AND e.expired_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM gateway.runs r WHERE r.id = e.run_id)
            ORDER BY e.run_id, e.created_at
            ON CONFLICT DO NOTHING;
        """

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

    /// The advisory lock that serializes admissions (and what must not
    /// interleave with them) across the cluster.
    static let admissionLock = "7573657273656566"

    static let runColumns = """
        r.id, r.request_key, r.state, r.instance, r.attempt, coalesce(r.lease_until < now(), false), r.partial_path,
        extract(epoch FROM r.started_at), extract(epoch FROM r.completed_at), r.rows_written, r.bytes_written, r.total_rows,
        r.size_bytes, r.sha256, r.gzip_size_bytes, r.gzip_sha256, r.error, r.query
        """

    static func runRow(_ row: [String?]) -> RunRow? {
        guard row.count >= 18, let id = row[0].flatMap(UUID.init(uuidString:)), let key = row[1], let query = row[17],
            let state = row[2].flatMap(ExportLifecycle.Status.init(rawValue:))
        else { return nil }
        func date(_ i: Int) -> Date? { row[i].flatMap(Double.init).map { Date(timeIntervalSince1970: $0) } }
        func int(_ i: Int) -> Int? { row[i].flatMap { Int($0) } }
        return RunRow(
            id: id, requestKey: key, query: query, state: state, instance: row[3], attempt: int(4) ?? 0, leaseExpired: row[5] == "t",
            partialPath: row[6], startedAt: date(7), completedAt: date(8), rowsWritten: int(9) ?? 0, bytesWritten: int(10) ?? 0,
            totalRows: int(11), sizeBytes: int(12), sha256: row[13], gzipSizeBytes: int(14), gzipSha256: row[15], error: row[16])
    }

    /// A PostgreSQL array literal of plain values (UUIDs, numbers, hex, NULL),
    /// for one `$n::type[]` parameter.
    static func array(_ values: [String]) -> String {
        "{" + values.joined(separator: ",") + "}"
    }

    /// The first column of the first row, if any.
    static func cell(_ rows: [[String?]]) -> String? {
        rows.first.flatMap { $0.first } ?? nil
    }

    /// Runs `body` in a transaction (on the journal's connections, retried
    /// once on a fresh one: every body here may run twice). A gateway that
    /// stops in the middle (frozen, cut off) must not hold its locks for
    /// long: the server ends a transaction left idle for the journal's
    /// statement timeout, and the locks go with it.
    func transaction<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        let idleLimit = max(1000, self.statementTimeoutMilliseconds ?? 5000)
        return try self.run(what) { db in
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

    struct Claim: Sendable {
        let instance: String
        let leaseSeconds: Int
        /// This gateway's partial folder, relative to CACHE_DIR.
        let partialFolder: String
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
        try self.transaction("admit") { db -> Admitted in
            try db.execute("SELECT pg_advisory_xact_lock(\(Self.admissionLock))")
            // The same admission again: `transaction` runs a body a second
            // time when the first COMMIT's outcome was unknown (the
            // connection dropped), and that COMMIT may have landed. Then the
            // export is there: answer with its run rather than admit it twice
            // (a second run no export refers to, or a 429 for an export that exists).
            if let runID = Self.cell(try db.execute("SELECT run_id FROM gateway.exports WHERE id = $1::uuid", parameters: [a.exportID.uuidString])),
                let row = try db.execute("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = $1::uuid", parameters: [runID]).first.flatMap(Self.runRow) {
                return row.id == a.runID ? .created(row) : .joined(row)
            }
            let active = "SELECT count(*) FROM gateway.exports e JOIN gateway.runs r ON r.id = e.run_id WHERE r.state IN ('queued', 'running') AND e.cancelled_at IS NULL AND e.expired_at IS NULL"
            func isFull() throws -> Bool { (Self.cell(try db.execute(active)).flatMap { Int($0) } ?? 0) >= a.activeLimit }
            // The owner's own bounds first: past them only that token is refused.
            if let owner = a.owner, let perMinute = a.ownerPerMinute {
                let window = try db.execute(
                    "SELECT admissions, ceil(extract(epoch FROM window_start + interval '1 minute' - now())) FROM gateway.token_windows WHERE owner = $1 AND window_start > now() - interval '1 minute'",
                    parameters: [owner])
                if let row = window.first, let used = row[0].flatMap({ Int($0) }), used >= perMinute {
                    return .ownerRateLimited(retryAfterSeconds: max(1, row[1].flatMap { Double($0) }.map { Int($0) } ?? 60))
                }
            }
            if let owner = a.owner, let limit = a.ownerActiveLimit {
                let mine = Self.cell(try db.execute(active + " AND e.owner = $1", parameters: [owner])).flatMap { Int($0) } ?? 0
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
                if let row = try db.execute("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.request_key = $1 AND r.joinable AND r.state IN ('queued', 'running') LIMIT 1 FOR SHARE OF r", parameters: [a.key]).first.flatMap(Self.runRow) {
                    if try isFull() { return .queueFull }
                    try insertExport(of: row.id)
                    try countAdmission()
                    return .joined(row)
                }
                let done = try db.execute(
                    """
                    SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.request_key = $1 AND r.joinable AND r.state = 'completed'
                      AND r.completed_at > now() - make_interval(secs => $2::double precision) ORDER BY r.completed_at DESC LIMIT 1 FOR SHARE OF r
                    """, parameters: [a.key, String(a.cacheTTLSeconds)]).first.flatMap(Self.runRow)
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
            let inserted = try db.execute(
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
            guard let row = inserted.first.flatMap(Self.runRow) else { throw Unavailable(details: "the new run was not returned") }
            try insertExport(of: row.id)
            try countAdmission()
            if row.state == .queued { try db.execute("NOTIFY gateway_queue") }
            return .created(row)
        }
    }

    // MARK: Claims and leases

    /// Claims the next queued run, or a running one whose lease ran out,
    /// for `claim.instance`; nil when there is none. Fair between tokens:
    /// the oldest run of the token (the run's `owner`) with the fewest runs
    /// running now in the whole cluster, so a token's export starts as soon
    /// as a worker frees, however long another token's queue is.
    func claimNext(_ claim: Claim) throws -> RunRow? {
        try self.transaction("claim") { db -> RunRow? in
            let claimed = try db.execute(
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
            guard let row = claimed.first.flatMap(Self.runRow) else { return nil }
            try db.execute("UPDATE gateway.exports SET status = 'running', started_at = now() WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status IN ('queued', 'running')", parameters: [row.id.uuidString])
            try db.execute("SELECT pg_notify('gateway_runs', $1)", parameters: [row.id.uuidString.lowercased()])
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
        let rows = try self.run("renew") { db in
            try db.execute(
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
        return Set(rows.compactMap { row in row.first.flatMap { $0 }.flatMap(UUID.init(uuidString:)) })
    }

    /// Connections of other processes under this gateway's
    /// `application_name`: another gateway started with the same INSTANCE_ID.
    func otherConnections(of instance: String) throws -> Int {
        let rows = try self.run("instance check") { db in
            try db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                parameters: ["gateway:" + instance])
        }
        return Self.cell(rows).flatMap { Int($0) } ?? 0
    }

    /// At start: the runs this instance was running when it stopped are
    /// queued again at once (it runs nothing yet), rather than after their lease.
    func requeueOwn(instance: String) throws -> Int {
        try self.transaction("requeue") { db in
            let rows = try db.execute(
                "UPDATE gateway.runs SET state = 'queued', lease_until = NULL, partial_path = NULL WHERE state = 'running' AND instance = $1 RETURNING id",
                parameters: [instance])
            if !rows.isEmpty { try db.execute("NOTIFY gateway_queue") }
            return rows.count
        }
    }

    /// Gives a run back to the queue (this gateway is stopping): another
    /// gateway, or this one's next start, runs it again.
    func release(_ runID: UUID, attempt: Int, instance: String) throws {
        try self.transaction("release") { db in
            let released = try db.execute(
                "UPDATE gateway.runs SET state = 'queued', lease_until = NULL, partial_path = NULL WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id",
                parameters: [runID.uuidString, instance, String(attempt)])
            guard !released.isEmpty else { return }
            try db.execute("UPDATE gateway.exports SET status = 'queued' WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status = 'running'", parameters: [runID.uuidString])
            try db.execute("NOTIFY gateway_queue")
            try db.execute("SELECT pg_notify('gateway_runs', $1)", parameters: [runID.uuidString.lowercased()])
        }
    }

    /// The run failed on this gateway (fenced by its claim).
    func fail(_ runID: UUID, attempt: Int, instance: String, message: String) throws {
        try self.transaction("fail") { db in
            let failed = try db.execute(
                "UPDATE gateway.runs SET state = 'failed', error = $4, completed_at = now(), lease_until = NULL WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id",
                parameters: [runID.uuidString, instance, String(attempt), message])
            guard !failed.isEmpty else { return }
            try db.execute("UPDATE gateway.exports SET status = 'failed', error = $2, completed_at = now() WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status IN ('queued', 'running')",
                parameters: [runID.uuidString, message])
            try db.execute("SELECT pg_notify('gateway_runs', $1)", parameters: [runID.uuidString.lowercased()])
        }
    }

    /// Publishes a run's file: under the lock of its hash, the run (if this
    /// gateway still holds it) and its exports say completed, and `rename`
    /// gives the file its name in `objects/`, in one transaction. Nil when the
    /// claim was lost (nothing renamed): the caller discards the file.
    func publish(_ sealed: SealedFile, runID: UUID, attempt: Int, instance: String, rows: Int, rename: () throws -> PublishedFile) throws -> PublishedFile? {
        try self.transaction("publish") { db -> PublishedFile? in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sealed.sha256])
            let updated = try db.execute(
                """
                UPDATE gateway.runs SET state = 'completed', completed_at = now(), lease_until = NULL, rows_written = $4::bigint,
                    bytes_written = $5::bigint, total_rows = $4::bigint, size_bytes = $5::bigint, sha256 = $6
                WHERE id = $1::uuid AND instance = $2 AND attempt = $3::int AND state = 'running' RETURNING id
                """, parameters: [runID.uuidString, instance, String(attempt), String(rows), String(sealed.size), sealed.sha256])
            guard !updated.isEmpty else { return nil }
            let published = try rename()
            try db.execute(
                """
                UPDATE gateway.exports e SET status = 'completed', started_at = r.started_at, completed_at = r.completed_at,
                    rows_written = r.rows_written, size_bytes = r.size_bytes, sha256 = r.sha256
                FROM gateway.runs r WHERE r.id = $1::uuid AND e.run_id = r.id AND e.cancelled_at IS NULL
                """, parameters: [runID.uuidString])
            try db.execute("SELECT pg_notify('gateway_runs', $1)", parameters: [runID.uuidString.lowercased()])
            return published
        }
    }

    /// Records a run's gzip form, under the lock of its hash, with `rename`
    /// giving the file its name.
    func publishGzip(_ sealed: SealedFile, runID: UUID, rename: () throws -> PublishedFile) throws -> PublishedFile {
        try self.transaction("gzip") { db in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sealed.sha256])
            let published = try rename()
            let parameters = [runID.uuidString, String(published.size), published.sha256]
            try db.execute("UPDATE gateway.runs SET gzip_size_bytes = $2::bigint, gzip_sha256 = $3 WHERE id = $1::uuid", parameters: parameters)
            try db.execute("UPDATE gateway.exports SET gzip_size_bytes = $2::bigint, gzip_sha256 = $3 WHERE run_id = $1::uuid", parameters: parameters)
            return published
        }
    }

    /// Removes a file of `objects/` with `remove`, under the lock of its
    /// hash, unless an export that is neither cancelled nor expired refers
    /// to it (on any gateway). True if it was removed.
    func removeUnreferenced(sha256: String, remove: () -> Void) throws -> Bool {
        try self.transaction("remove object") { db in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sha256])
            let referenced = try db.execute(
                "SELECT EXISTS (SELECT 1 FROM gateway.exports WHERE (sha256 = $1 OR gzip_sha256 = $1) AND expired_at IS NULL AND cancelled_at IS NULL)",
                parameters: [sha256])
            guard Self.cell(referenced) == "f" else { return false }
            remove()
            return true
        }
    }

    /// Of these hashes, those no export that is neither cancelled nor
    /// expired refers to (candidates for `removeUnreferenced`, which checks
    /// again under the lock).
    func unreferenced(_ hashes: [String]) throws -> Set<String> {
        guard !hashes.isEmpty else { return [] }
        let rows = try self.run("unreferenced") { db in
            try db.execute(
                """
                SELECT s FROM unnest($1::text[]) AS s
                WHERE NOT EXISTS (SELECT 1 FROM gateway.exports WHERE sha256 = s AND expired_at IS NULL AND cancelled_at IS NULL)
                  AND NOT EXISTS (SELECT 1 FROM gateway.exports WHERE gzip_sha256 = s AND expired_at IS NULL AND cancelled_at IS NULL)
                """, parameters: [Self.array(hashes)])
        }
        return Set(rows.compactMap { $0.first ?? nil })
    }

    // MARK: Cancel, delete, look up

    /// Cancels one export (durable when this returns), and its run when no
    /// export of it on any gateway still wants it; the run's gateway hears
    /// of it by `gateway_runs`. Returns whether the run was cancelled, and its id.
    func cancelExport(_ id: UUID) throws -> (runID: UUID?, runCancelled: Bool) {
        try self.transaction("cancel") { db in
            guard let runID = Self.cell(try db.execute("SELECT run_id FROM gateway.exports WHERE id = $1::uuid", parameters: [id.uuidString])).flatMap(UUID.init(uuidString:)) else {
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
            if !cancelled.isEmpty { try db.execute("SELECT pg_notify('gateway_runs', $1)", parameters: [runID.uuidString.lowercased()]) }
            try db.execute("SELECT pg_notify('gateway_exports', $1)", parameters: [id.uuidString.lowercased()])
            return (runID, !cancelled.isEmpty)
        }
    }

    /// Deletes an export's row and tells the other gateways.
    func deleteExport(_ id: UUID) throws {
        try self.transaction("delete") { db in
            try db.execute("DELETE FROM gateway.exports WHERE id = $1::uuid", parameters: [id.uuidString])
            try db.execute("SELECT pg_notify('gateway_exports', $1)", parameters: [id.uuidString.lowercased()])
        }
    }

    /// One export and its run, as another gateway may have made them.
    func fetchExport(_ id: UUID) throws -> (Record, RunRow?)? {
        try self.run("look up") { db -> (Record, RunRow?)? in
            guard let record = try db.execute(Self.selectExports + " WHERE e.id = $1::uuid", parameters: [id.uuidString]).first.flatMap(Self.record) else { return nil }
            let run = try db.execute("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = $1::uuid", parameters: [record.runID.uuidString]).first.flatMap(Self.runRow)
            return (record, run)
        }
    }

    /// The rows of these runs (those that still exist).
    func fetchRuns(_ ids: [UUID]) throws -> [RunRow] {
        guard !ids.isEmpty else { return [] }
        return try self.run("runs") { db in
            try db.execute("SELECT \(Self.runColumns) FROM gateway.runs r WHERE r.id = ANY($1::uuid[])",
                parameters: [Self.array(ids.map(\.uuidString))])
        }.compactMap(Self.runRow)
    }

    /// Which of these exports still exist, and which of them are cancelled.
    func exportStates(_ ids: [UUID]) throws -> [UUID: Bool] {
        guard !ids.isEmpty else { return [:] }
        let rows = try self.run("exports") { db in
            try db.execute("SELECT id, cancelled_at IS NOT NULL FROM gateway.exports WHERE id = ANY($1::uuid[])",
                parameters: [Self.array(ids.map(\.uuidString))])
        }
        var states: [UUID: Bool] = [:]
        for row in rows {
            if let id = row.first.flatMap({ $0 }).flatMap(UUID.init(uuidString:)) { states[id] = row.count > 1 && row[1] == "t" }
        }
        return states
    }

    /// The gateways that hold a lease now (they may be writing partial files).
    func liveInstances() throws -> Set<String> {
        let rows = try self.run("instances") { db in
            try db.execute("SELECT DISTINCT instance FROM gateway.runs WHERE state = 'running' AND lease_until > now() AND instance IS NOT NULL")
        }
        return Set(rows.compactMap { $0.first ?? nil })
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
        try self.transaction("forget runs") { db in
            try db.execute("SELECT pg_advisory_xact_lock(\(Self.admissionLock))")
            try db.execute(
                """
                DELETE FROM gateway.runs r WHERE r.state IN ('completed', 'failed', 'cancelled')
                  AND r.completed_at < now() - make_interval(secs => $1::double precision)
                  AND NOT EXISTS (SELECT 1 FROM gateway.exports e WHERE e.run_id = r.id)
                """, parameters: [String(seconds)])
        }
    }
}

extension ExportJournal {
    /// A finished run whose file is gone from the cache is queued again
    /// (an earlier version's run gets its row here).
    func requeueLost(_ runID: UUID, key: String, query: String) throws {
        try self.transaction("requeue lost") { db in
            try db.execute(
                """
                INSERT INTO gateway.runs AS r (id, request_key, query, state, joinable) VALUES ($1::uuid, $2, $3, 'queued', false)
                ON CONFLICT (id) DO UPDATE SET state = 'queued', instance = NULL, lease_until = NULL, partial_path = NULL,
                    size_bytes = NULL, sha256 = NULL, completed_at = NULL, joinable = false
                WHERE r.state = 'completed'
                """, parameters: [runID.uuidString, key, query])
            try db.execute("UPDATE gateway.exports SET status = 'queued', completed_at = NULL, size_bytes = NULL, sha256 = NULL WHERE run_id = $1::uuid AND cancelled_at IS NULL AND status = 'completed'",
                parameters: [runID.uuidString])
            try db.execute("NOTIFY gateway_queue")
        }
    }
}
