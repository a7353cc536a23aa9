/// The journal's tables in PostgreSQL, and the migration that makes them:
/// `gateway.exports` (one row per export), `gateway.runs` (the shared queue
/// of runs, `ExportJournal+Runs.swift`) and `gateway.token_windows` (each
/// token's admissions in its current minute). Every statement is
/// idempotent (`IF NOT EXISTS`), so a gateway of any version may start on
/// a database any other version made, and several gateways may start at once.
extension ExportJournal {
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

    /// The shared queue (see `ExportJournal+Runs.swift`); the runs of an
    /// earlier version's unfinished exports get their rows here.
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

    /// True (in column `current`) when the newest of `schema`'s objects
    /// exist (update it with the schema).
    static let schemaIsCurrent = """
        SELECT count(*) = 5 AND to_regclass('gateway.exports_created_idx') IS NOT NULL AND to_regclass('gateway.token_windows') IS NOT NULL AS current
        FROM information_schema.columns WHERE table_schema = 'gateway' AND (
            (table_name = 'exports' AND column_name = 'owner') OR (table_name = 'runs' AND column_name = 'query')
            OR (table_name = 'runs' AND column_name = 'joinable') OR (table_name = 'runs' AND column_name = 'owner')
            OR (table_name = 'exports' AND column_name = 'expired_reason'))
        """

    /// Makes the schema current on `db`, in a transaction of its own under
    /// an advisory lock (two gateways starting together do not both run it).
    static func migrate(_ db: PostgresConnection) throws {
        // Only when something is missing: `ALTER TABLE` takes an
        // exclusive lock even when it changes nothing, and other gateways
        // on the database are using the tables now.
        if try db.rows(Self.schemaIsCurrent).first?.bool("current") != true {
            try db.execute("BEGIN; SELECT pg_advisory_xact_lock(7573657273656565); " + Self.schema + "; COMMIT")
        }
    }
}
