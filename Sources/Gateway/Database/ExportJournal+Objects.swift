/// The files of `objects/` (named by their SHA-256, shared by every export
/// whose run made the same bytes) and the export rows that refer to them.
/// A file may go only when no export that is neither cancelled nor expired
/// refers to it, on any gateway; the check and the removal happen under
/// an advisory lock on the file's hash (`pg_advisory_xact_lock(hashtextextended(sha256, 0))`),
/// the same lock under which a run's file is published
/// (`ExportJournal+Runs.swift`: `publish`, `publishGzip`) and which an
/// admission joining a completed run takes shared (`ExportJournal+Exports.swift`),
/// so no gateway removes a file another's export has just come to refer to.
extension ExportJournal {
    /// Removes a file of `objects/` with `remove`, under the lock of its
    /// hash, unless an export that is neither cancelled nor expired refers
    /// to it (on any gateway). True if it was removed.
    func removeUnreferenced(sha256: String, remove: () -> Void) throws -> Bool {
        try self.inTransactionRetryingOnce("remove object") { db in
            try db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", parameters: [sha256])
            let referenced = try db.rows(
                "SELECT EXISTS (SELECT 1 FROM gateway.exports WHERE (sha256 = $1 OR gzip_sha256 = $1) AND expired_at IS NULL AND cancelled_at IS NULL) AS referenced",
                parameters: [sha256])
            guard referenced.first?.text("referenced") == "f" else { return false }
            // Deleted inside the transaction, still under the lock of its
            // hash, right after the check: a publish or an admission that
            // would come to refer to this file waits for the lock, and then
            // finds it gone (a publish renames its own file there; an
            // admission does not join the run whose file it was) rather
            // than referring to a file removed after the check.
            remove()
            return true
        }
    }

    /// Of these hashes, those no export that is neither cancelled nor
    /// expired refers to (candidates for `removeUnreferenced`, which checks
    /// again under the lock).
    func unreferenced(_ hashes: [String]) throws -> Set<String> {
        guard !hashes.isEmpty else { return [] }
        let rows = try self.withRetryOnce("unreferenced") { db in
            try db.rows(
                """
                SELECT s AS hash FROM unnest($1::text[]) AS s
                WHERE NOT EXISTS (SELECT 1 FROM gateway.exports WHERE sha256 = s AND expired_at IS NULL AND cancelled_at IS NULL)
                  AND NOT EXISTS (SELECT 1 FROM gateway.exports WHERE gzip_sha256 = s AND expired_at IS NULL AND cancelled_at IS NULL)
                """, parameters: [Self.array(hashes)])
        }
        return Set(rows.compactMap { $0.text("hash") })
    }
}
