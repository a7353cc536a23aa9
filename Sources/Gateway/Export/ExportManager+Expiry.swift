import Cache
import Foundation

/// Expiry and forgetting: exports past EXPORT_TTL expire (on a look-up, or
/// in the janitor's round), exports whose files make room are evicted
/// (`makeRoom`), and runs no export here needs are dropped once CACHE_TTL
/// has passed (the janitor's round).
extension ExportManager {
    /// Expires the exports past EXPORT_TTL.
    func expireOld() async {
        let now = Date()
        let old = self.registry.withLock { $0.jobs(olderThan: self.exportTTL, now: now) }
        if !old.isEmpty { await self.expire(old) }
    }

    /// Forgets the ids expired for another EXPORT_TTL (404 from then on),
    /// drops the runs no export here needs (ended ones past CACHE_TTL, and
    /// mirrors of other gateways' runs, looked up again if asked for), and
    /// brings the cache back under CACHE_MAX_BYTES.
    func forgetStaleRuns() {
        let now = Date()
        let removals = self.registry.withLock { registry -> [String] in
            registry.forgetExpired(olderThan: self.exportTTL, now: now)
            return registry.forgetStaleRuns { self.isJoinable($0, now: now) }.flatMap { self.cache.drop($0) }
        }
        self.remove(removals)
        _ = self.hasRoom(for: 0)
    }

    /// Removes exports past EXPORT_TTL (cancelling them if they still run),
    /// remembers their ids for 410, and journals it. The journal is not an
    /// acknowledgement here: a restart finds them expired by their age anyway.
    ///
    /// `evicted`: they expire early because their files make room for a new
    /// export (`makeRoom`); they answer 410 `export_evicted`. Then the mark
    /// must be in the journal, or the file cannot go (another gateway's
    /// export refers to it): false when it could not be written, and nothing changed.
    @discardableResult
    func expire(_ jobs: [ExportJob], evicted: Bool = false) async -> Bool {
        // Journaled first: a file of theirs is removed only once no export
        // in the database refers to it, and these no longer do then.
        let ids = jobs.map(\.id)
        let marked = (try? await self.onDatabasePool { try $0.journal.markExpired(ids, evicted: evicted) }) != nil
        if evicted, !marked { return false }
        for job in jobs {
            if !job.isCancelled, job.run.status == .queued || job.run.status == .running {
                // Its run stops when no export on any gateway needs it.
                let id = job.id
                let runCancelled = (try? await self.onDatabasePool { try $0.journal.cancelExport(id).runCancelled }) ?? false
                self.applyCancel(job, runCancelled: runCancelled)
            }
            let now = Date()
            let removals = self.registry.withLock { registry -> [String] in
                registry.expire(job, at: now, evicted: evicted).map { self.cache.drop($0) } ?? []
            }
            self.remove(removals)
        }
        self.logger.info(evicted ? "exports evicted to make room in the cache" : "exports expired", metadata: [LogKey.exportsExpired: "\(jobs.count)"])
        return true
    }
}
