import Logging

/// Creates and fills the `users` table when it is missing or empty; a table
/// that holds rows is never touched.
///
/// Everything happens in one transaction under an advisory lock, so a crash
/// mid-seed leaves no half-filled table, and two gateways starting together
/// do not both seed. Blocking: run it on a thread pool.
struct Seeder {
    let database: PostgresSettings
    let rows: Int
    let logger: Logger

    /// Rows inserted per statement; each batch logs one line of progress.
    private var batchSize: Int { max(10_000, min(500_000, self.rows / 20)) }

    /// Returns how many rows it inserted (0 when the table already had rows).
    @discardableResult
    func seedIfEmpty() throws -> Int {
        let db = try PostgresConnection(self.database)
        defer { db.close() }
        try db.execute("BEGIN")
        // An arbitrary constant key: 'users seed' in hex.
        try db.execute("SELECT pg_advisory_xact_lock(7573657273656564)")
        let exists = try db.execute("SELECT to_regclass('users') IS NOT NULL").first?.first == "t"
        if exists {
            // A session that holds a lock on a table with rows (a long
            // transaction, a migration) must not keep the gateway from
            // serving: such a table is someone's data, not ours to seed.
            try db.execute("SET LOCAL lock_timeout = '5s'")
            do {
                if try db.execute("SELECT EXISTS (SELECT 1 FROM users)").first?.first == "t" {
                    try db.execute("COMMIT")
                    self.logger.info("users table already has rows; not seeding")
                    return 0
                }
            } catch let error as PostgresError where error.sqlState == "55P03" {
                self.logger.warning("users is locked by another session; not seeding")
                return 0
            }
            try db.execute("SET LOCAL lock_timeout = 0")
        }
        self.logger.info("seeding users", metadata: [LogKey.seedRows: "\(self.rows)"])
        let clock = ContinuousClock()
        let start = clock.now
        if !exists { try db.execute(UsersTable.createTable) }
        var done = 0
        while done < self.rows {
            let upTo = min(self.rows, done + self.batchSize)
            try db.execute(UsersTable.insertRange, parameters: [String(done + 1), String(upTo)])
            done = upTo
            let percent = done * 100 / self.rows
            self.logger.info("seeding users: \(done)/\(self.rows) rows (\(percent)%)")
        }
        if !exists {
            self.logger.info("seeding users: building indexes")
            try db.execute(UsersTable.createIndexes)
        }
        try db.execute("COMMIT")
        // Fresh statistics, so the planner's row estimates in status are close.
        try db.execute("ANALYZE users")
        self.logger.info("seeded users", metadata: [LogKey.seedRows: "\(self.rows)", LogKey.seedSeconds: "\(clock.now - start)"])
        return self.rows
    }
}
