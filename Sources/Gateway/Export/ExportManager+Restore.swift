import Cache
import Foundation

extension ExportManager {
    /// Reads the journal and restores its exports; true once that is done.
    /// Until it is, `isJournalLoaded` is false and export requests get 503:
    /// answering 404 for ids the journal holds would lose them for the life
    /// of the process (seen: a lock on the journal table at start-up made
    /// every acknowledged id a 404 until the next restart).
    /// - Parameter atStart: before this gateway has opened other connections,
    ///   when one more of its name means another process has its INSTANCE_ID.
    @discardableResult
    func loadJournal(atStart: Bool = false) async -> Bool {
        do {
            let records = try await self.onDatabasePool { manager in
                let records = try manager.journal.load()
                // Only this start's own connection may carry its name: more
                // means another process runs under the same INSTANCE_ID, whose
                // runs are not this one's to queue again.
                let others = atStart ? try manager.journal.otherConnections(of: manager.instanceID) : 0
                if others > 0 {
                    manager.logger.error(
                        "another process is connected to the database as this INSTANCE_ID; ids must be unique among the gateways (its running exports are left to it)",
                        metadata: [LogKey.instance: "\(manager.instanceID)", LogKey.connections: "\(others)"])
                    return records
                }
                // It runs nothing yet: what it ran before it stopped is queued again now, not after the lease.
                let requeued = try manager.journal.requeueOwn(instance: manager.instanceID)
                if requeued > 0 { manager.logger.notice("runs this gateway ran before it stopped are queued again", metadata: [LogKey.journalRequeued: "\(requeued)"]) }
                return records
            }
            let (restored, requeued) = try await self.onFilesPool { $0.restore(records) }
            self.registry.withLock { $0.markJournalLoaded() }
            if restored > 0 { self.logger.notice("restored exports from the journal", metadata: [LogKey.journalExports: "\(restored)", LogKey.journalRequeued: "\(requeued)"]) }
            return true
        } catch {
            self.logger.error("could not read the export journal; export requests get 503 until it is read", metadata: ["error": "\(ErrorText.details(error))"])
            return false
        }
    }

    /// True once the journal has been read and its exports restored.
    var isJournalLoaded: Bool { self.registry.withLock { $0.journalLoaded } }

    /// Brings back the exports of the journal after a restart: finished ones
    /// whose file is on disk as they were, failed and cancelled ones as
    /// such, queued and running ones as mirrors of the shared queue (any
    /// gateway, this one included, claims them), and finished ones whose
    /// file is gone queued again under the same ids. Then removes every file
    /// in the cache that no export on any gateway refers to. Blocking (file
    /// checks, the database); call it on a thread pool before serving.
    func restore(_ records: [ExportJournal.Record]) -> (restored: Int, requeued: Int) {
        var requeue: [ExportRun] = []
        var active: [UUID] = []
        var restored = 0
        var newlyExpired: [UUID] = []
        for (runID, rows) in Dictionary(grouping: records, by: \.runID) {
            guard let first = rows.first, let request = try? ExportRequest.parse(try QueryString.parse(first.query)) else {
                self.logger.warning("journal row with an unreadable request skipped", metadata: [LogKey.runID: "\(runID)"])
                continue
            }
            let now = Date()
            let isExpired: (ExportJournal.Record) -> Bool = { $0.expiredAt != nil || now.timeIntervalSince($0.createdAt) >= self.exportTTL }
            self.registry.withLock { registry in
                for row in rows where isExpired(row) { registry.rememberExpired(row.id, ExpiredExport(at: row.expiredAt ?? now, owner: row.owner, evicted: row.evicted)) }
            }
            newlyExpired += rows.filter { $0.expiredAt == nil && isExpired($0) }.map(\.id)
            let rows = rows.filter { !isExpired($0) }
            guard !rows.isEmpty else { continue }
            let live = rows.filter { $0.cancelledAt == nil }
            let run: ExportRun
            if let done = live.first(where: { $0.status == .completed }), let file = self.onDisk(done.sha256, done.sizeBytes, suffix: ".csv") {
                let gzip = self.onDisk(done.gzipSha256, done.gzipSizeBytes, suffix: ".csv.gz")
                let lifecycle = ExportLifecycle(status: .completed, startedAt: done.startedAt, completedAt: done.completedAt, file: file, errorMessage: nil)
                run = ExportRun(id: runID, request: request, ended: lifecycle, rows: done.rows ?? 0, gzip: gzip)
            } else if live.contains(where: { $0.status == .queued || $0.status == .running }) {
                run = ExportRun(id: runID, request: request)
                active.append(runID)
            } else if live.contains(where: { $0.status == .completed }) {
                run = ExportRun(id: runID, request: request)
                requeue.append(run)
            } else {
                let failed = live.first
                let status: ExportLifecycle.Status = failed == nil ? .cancelled : .failed
                let lifecycle = ExportLifecycle(status: status, startedAt: failed?.startedAt, completedAt: failed?.completedAt ?? rows[0].cancelledAt, file: nil, errorMessage: failed?.error)
                run = ExportRun(id: runID, request: request, ended: lifecycle, rows: 0, gzip: nil)
            }
            // Read outside the manager's lock: the run's own locks are taken
            // after the manager's elsewhere, never before.
            let files = [run.publishedFile, run.publishedGzip].compactMap { $0 }
            let jobs = rows.map { ExportJob(id: $0.id, run: run, owner: $0.owner, createdAt: $0.createdAt, cancelledAt: $0.cancelledAt) }
            let added = self.registry.withLock { registry in
                guard registry.restore(run, members: Set(live.map(\.id)), jobs: jobs) else { return false }
                self.cache.touch(run.id, at: run.completedAt ?? now)
                for file in files { self.cache.hold(file, for: run.id) }
                return true
            }
            guard added else { continue }
            restored += rows.count
        }
        do {
            try self.journal.markExpired(newlyExpired)
        } catch {
            self.logger.notice("expired exports not journaled; they expire again by age on the next start")
        }
        // A finished export whose file is gone runs again, like a queued one.
        for run in requeue {
            do {
                try self.journal.requeueLost(run.id, key: run.request.cacheKey, query: run.canonicalQuery)
                active.append(run.id)
            } catch {
                self.logger.notice("a finished export whose file is gone could not be queued again", metadata: [LogKey.runID: "\(run.id.uuidString.lowercased())"])
            }
        }
        self.signals.refreshSoon(active)
        self.signals.wakeClaims()
        let names = self.store.objectNames()
        let held = Set(names.filter { self.cache.isHeld(self.store.objectsDirectory + "/" + $0) })
        for name in names where !held.contains(name) {
            self.removeUnreferenced(self.store.objectsDirectory + "/" + name)
        }
        return (restored, requeue.count)
    }

    /// The published file with this hash and size, if it is still in the cache.
    func onDisk(_ sha256: String?, _ size: Int?, suffix: String) -> PublishedFile? {
        guard let sha256, let size, Hex.isSHA256(sha256) else { return nil }
        let path = self.store.objectPath(sha256: sha256, suffix: suffix)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path), (attributes[.size] as? Int) == size else { return nil }
        return PublishedFile(path: path, size: size, sha256: sha256)
    }
}
