import Cache
import Foundation

/// `POST /exports`: an export is admitted through the shared queue in
/// PostgreSQL (`ExportJournal.admit`, which coalesces identical requests
/// across every gateway on the database and applies the shared and
/// per-token bounds), given room in the cache before it is acknowledged
/// (`makeRoom`), and adopted into the registry; a run that starts here
/// goes to the workers at once.
extension ExportManager {
    /// Admits a new export. It joins the run of an identical request that is
    /// queued, running or fresh on any gateway (unless `fresh` asks for a new
    /// run); otherwise a new run starts here now (a worker is free), or
    /// waits in the shared queue for any gateway, or is refused when the
    /// limits are reached. Returns once the journal holds the export.
    func submit(_ request: ExportRequest, owner: String?, fresh: Bool = false) async throws(SubmitError) -> ExportJob {
        if let refusal = self.registry.withLock({ self.refusal($0) }) { throw refusal }
        // A run of this request that this gateway runs and has seen fail or
        // stop, whose end the database may not have yet (it was down): not
        // one to join, so a new run starts (as with `no-cache`).
        let key = request.cacheKey
        let doomed = self.registry.withLock { $0.hasDoomedClaim(key: key) }
        let fresh = fresh || doomed
        let claiming = self.reserveSlot()
        let admission = ExportJournal.Admission(
            exportID: UUID(), runID: UUID(), key: request.cacheKey, query: request.canonicalQuery, owner: owner, createdAt: Date(), fresh: fresh,
            cacheTTLSeconds: Int(self.cacheTTL), activeLimit: self.activeJobLimit,
            ownerActiveLimit: owner == nil ? nil : self.limits.tokenActiveLimit,
            ownerPerMinute: owner == nil || self.limits.tokenCreatesPerMinute == 0 ? nil : self.limits.tokenCreatesPerMinute,
            claim: claiming ? self.claimTemplate : nil)
        let admitted: ExportJournal.Admitted
        do {
            admitted = try await self.onDatabasePool { manager in
                try manager.journal.admit(admission) { sha, size in manager.onDisk(sha, size, suffix: ".csv") != nil }
            }
        } catch {
            if claiming { self.releaseSlot() }
            self.logger.warning("export not admitted: the journal is unavailable")
            throw .journalUnavailable
        }
        switch admitted {
        case .queueFull:
            if claiming { self.releaseSlot() }
            throw .queueFull
        case .ownerQueueFull:
            if claiming { self.releaseSlot() }
            throw .tokenQueueFull(limit: self.limits.tokenActiveLimit)
        case .ownerRateLimited(let seconds):
            if claiming { self.releaseSlot() }
            throw .tokenRateLimited(limit: self.limits.tokenCreatesPerMinute, retryAfterSeconds: seconds)
        case .joined(let row):
            if claiming { self.releaseSlot() }
            return self.adopt(exportID: admission.exportID, owner: owner, createdAt: admission.createdAt, cancelledAt: nil, row: row, request: request)
        case .created(let row):
            let mine = row.state == .running && row.instance == self.instanceID
            if claiming, !mine { self.releaseSlot() }
            let job = self.adopt(exportID: admission.exportID, owner: owner, createdAt: admission.createdAt, cancelledAt: nil, row: row, request: request, reconciling: !mine)
            // A new run needs room for what it is estimated to write, made
            // now (evicting if need be), before the export is acknowledged.
            if let refusal = await self.makeRoom(for: request, owner: owner, run: row.id) {
                if mine { self.releaseSlot() }
                await self.takeBack(job)
                throw .cacheFull(refusal)
            }
            if mine { self.startClaimed(row) }
            return job
        }
    }

    /// The local side of an admitted export: its job, on the run object
    /// this gateway keeps for the run (made if new), brought to the run's
    /// state as the database has it.
    func adopt(exportID: UUID, owner: String?, createdAt: Date, cancelledAt: Date?, row: ExportJournal.RunRow, request: ExportRequest, reconciling: Bool = true) -> ExportJob {
        let now = Date()
        let job = self.registry.withLock { registry in
            let job = registry.adopt(exportID: exportID, owner: owner, createdAt: createdAt, cancelledAt: cancelledAt, runID: row.id, request: request)
            self.cache.touch(row.id, at: now)
            return job
        }
        guard reconciling else { return job }
        self.reconcile(row)
        // Reconciling may have put a new run object (a new attempt) in its place.
        return self.registry.withLock { $0.job(exportID) } ?? job
    }

    /// Takes back an export that was admitted but cannot run (no room):
    /// its row goes, and its run if no one else joined it.
    private func takeBack(_ job: ExportJob) async {
        let id = job.id
        let cancelled = try? await self.onDatabasePool { manager in
            let result = try manager.journal.cancelExport(id)
            try manager.journal.deleteExport(id)
            return result.runCancelled
        }
        self.applyCancel(job, runCancelled: cancelled ?? false)
        self.registry.withLock { registry in
            if let forgotten = registry.takeBack(job) { _ = self.cache.drop(forgotten) }
        }
    }

    /// Why no export may be admitted now, if so.
    private func refusal(_ registry: ExportRegistry) -> SubmitError? {
        if registry.shuttingDown { return .shuttingDown }
        if !registry.journalLoaded { return .journalUnavailable }
        if registry.jobCount >= self.limits.maxExports { return .tooManyExports }
        return nil
    }

    /// Export ids that may wait or run at once in the cluster, coalesced or not.
    private var activeJobLimit: Int { self.limits.maxConcurrent + self.limits.maxQueued }

    /// A run another export may join: not ended badly nor interrupted, and if
    /// completed, completed within `cacheTTL` and still holding its file.
    func isJoinable(_ run: ExportRun, now: Date = Date()) -> Bool {
        switch run.status {
        case .queued, .running:
            return !run.isInterrupted
        case .completed:
            guard let completedAt = run.completedAt, let file = run.publishedFile else { return false }
            return now.timeIntervalSince(completedAt) < self.cacheTTL && self.cache.isHeld(file.path)
        case .failed, .cancelled:
            return false
        }
    }
}
