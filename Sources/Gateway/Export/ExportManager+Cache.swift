import Cache
import Foundation

/// The cache's bytes and files, as the manager keeps them: room under
/// CACHE_MAX_BYTES (eviction), publishing into `objects/`, deleting from it,
/// and the files readers hold open.
///
/// **Order in `objects/`.** Files are content-addressed: two runs can publish
/// the same name. So that a deletion decided for one run can never remove the
/// file another run has just published under the same name, every rename
/// into `objects/` (`install`) and every deletion from it (`remove`) runs on
/// one thread (`BlockingPools.files`), and each checks the ledger there: a
/// deletion skips a file that is held again, and an install keeps an
/// existing file of that name (the same bytes). No lock is held across the I/O.
/// Other gateways share the folder: there, each rename and each deletion
/// also runs in a transaction that holds an advisory lock on the file's hash
/// (`ExportJournal.publish`, `removeUnreferenced`), and a deletion skips a
/// file that an export on any gateway refers to.
///
/// **Bound.** CACHE_MAX_BYTES bounds what this gateway counts: the files of
/// the runs it knows (its own, and those of other gateways' exports it has
/// served) and what it is writing. Gateways sharing one folder each count
/// their own share; give each `volume / gateways`.
extension ExportManager {
    /// Room for a new run of `request` (the run `runID`, just admitted, not
    /// yet acknowledged), as `CacheRoom` decides from the planner's estimate
    /// of its size: nil when it fits (files that must go to make room have
    /// gone, their exports expired as evicted), else the reason it does not,
    /// for the 507. Without an estimate (the plan could not be had at once)
    /// it asks room for the first write only, as before estimates.
    func makeRoom(for request: ExportRequest, owner: String?, run runID: UUID) async -> String? {
        guard self.cache.limit > 0 else { return nil }
        let plan = try? await self.onDatabasePool { manager in
            try manager.journal.planEstimate { db in try ExportQuery(request: request).explain(literal: db.literal) }
        }
        let estimate = (plan ?? nil).map { CacheRoom.estimatedBytes(rows: $0.rows, width: $0.width, columns: request.columns.count) } ?? CopyPiece.stagingSize
        let room = CacheRoom(limit: self.cache.limit, sharePercent: self.tokenCacheSharePercent)
        let (decision, victims) = self.registry.withLock { registry -> (CacheRoom.Decision, [UUID: [ExportJob]]) in
            let (others, owners, jobsOfRun) = registry.roomView(excluding: runID)
            let (used, usage) = self.cache.usage(of: others.map(\.id))
            let entries = others.map { run -> CacheRoom.Entry in
                let known = usage[run.id]
                let finished = run.status == .completed && known?.heldBytes != nil
                let written = run.status == .running ? run.snapshot().bytesWritten : 0
                let bytes = finished ? known?.heldBytes ?? 0 : written
                let active = run.status == .queued || run.status == .running
                let pending = active ? max(0, (known?.estimate ?? 0) - written) : 0
                return CacheRoom.Entry(runID: run.id, bytes: bytes, pending: pending, owners: owners[run.id] ?? [], finished: finished, lastUsed: known?.lastUsed ?? .distantPast)
            }
            let decision = room.decide(estimate: estimate, owner: owner, used: used, entries: entries)
            guard case .fits(let evicting) = decision else { return (decision, [:]) }
            // Spoken for from now on, by the next admissions' decisions
            // (taken under the registry's lock, like this decision).
            if registry.knowsRun(runID) { self.cache.setEstimate(estimate, for: runID) }
            return (decision, Dictionary(uniqueKeysWithValues: evicting.map { ($0, jobsOfRun[$0] ?? []) }))
        }
        switch decision {
        case .fits:
            for (_, jobs) in victims where !jobs.isEmpty {
                guard await self.expire(jobs, evicted: true) else {
                    return "the export cache is full, and the files that could make room cannot be evicted now (the database did not answer); retry shortly"
                }
                Telemetry.evictions.increment()
            }
            return nil
        case .largerThanCache(let limit):
            return "this export is estimated at \(estimate) bytes, more than the whole export cache may hold (CACHE_MAX_BYTES, \(limit) bytes); ask for fewer rows or columns"
        case .overTokenShare(let share):
            return
                "this export is estimated at \(estimate) bytes, and this token's exports may hold \(share) bytes of the cache (TOKEN_CACHE_SHARE), which its running exports and this one would pass; retry when they have finished, or ask for fewer rows"
        case .full:
            return
                "the export cache is full (CACHE_MAX_BYTES): running exports and files being read hold it, and this export is estimated at \(estimate) bytes; retry when running exports have finished"
        }
    }

    /// True if `bytes` more fit under CACHE_MAX_BYTES, evicting what may go.
    func hasRoom(for bytes: Int) -> Bool {
        let probe = UUID()
        let fits = self.reserve(bytes, for: probe, writing: nil)
        self.endPartial(probe)
        return fits
    }

    /// Reserves `bytes` more for `producer`'s partial file under
    /// CACHE_MAX_BYTES, evicting the least recently used finished runs that no
    /// export needs (never `writing`, the run asking) while it does not fit.
    /// False when even that is not enough. Readers of an evicted file keep
    /// reading it (they opened it before); its bytes count until they close it.
    /// A write that fits takes only the budget's lock, not the registry's.
    func reserve(_ bytes: Int, for producer: UUID, writing: ExportRun?) -> Bool {
        if self.cache.reserve(bytes, for: producer) { return true }
        let (fits, removals) = self.registry.withLock { registry -> (Bool, [String]) in
            // Under the registry's lock: the runs named cannot be joined
            // while they are evicted (the budget tries on a copy first, so
            // nothing is evicted for nothing).
            let evictable = registry.evictable(except: writing).map(\.id)
            guard let (evicted, removals) = self.cache.reserve(bytes, for: producer, evicting: evictable) else { return (false, []) }
            registry.evicted(evicted)
            return (true, removals)
        }
        self.remove(removals)
        if !removals.isEmpty {
            Telemetry.evictions.increment(by: Int64(removals.count))
            self.logger.info("evicted cache files", metadata: [LogKey.cacheEvicted: "\(removals.count)"])
        }
        return fits
    }

    /// Bytes of a spool file, now copied into the export's own file, count
    /// for that file instead (`ExportRunner`'s parallel pieces).
    func transferReservation(_ bytes: Int, from spool: UUID, to producer: UUID) {
        self.cache.transfer(bytes, from: spool, to: producer)
    }

    /// The producer's partial file is gone (published or discarded).
    func endPartial(_ producer: UUID) {
        self.cache.endPartial(producer)
    }

    /// What `/metrics` shows of the manager's state.
    struct MetricsSnapshot: Sendable {
        var exportsByState: [ExportLifecycle.Status: Int] = [:]
        var queued = 0
        var running = 0
        var workers = 0
        var cacheBytes = 0
    }

    func metricsSnapshot() -> MetricsSnapshot {
        let (jobs, queued, running) = self.registry.withLock { $0.counts }
        let bytes = self.cache.totalBytes
        var snapshot = MetricsSnapshot(queued: queued, running: running, workers: self.limits.maxConcurrent, cacheBytes: bytes)
        // Outside the manager's lock: a job's status takes its run's lock.
        for job in jobs { snapshot.exportsByState[job.status, default: 0] += 1 }
        return snapshot
    }

    /// Bytes the cache holds now, as the ledger counts them.
    var cacheBytes: Int { self.cache.totalBytes }

    /// Publishes a sealed file for run `holder`: `record` renames it into
    /// `objects/` (keeping an identical file that is there already) with the
    /// rename it is given, in the transaction that records it in the
    /// database, and this records the hold. If the run was forgotten
    /// meanwhile (cancelled and dropped), or `record` returns nil (the claim
    /// on the run was lost), the file goes and this throws. Runs on the files thread only.
    func install(_ sealed: SealedFile, holder run: ExportRun, producer: UUID, record: (() throws -> PublishedFile) throws -> PublishedFile?) throws -> PublishedFile {
        let alive = self.registry.withLock { $0.keeps(run) }
        guard alive, let published = try record({ try self.store.install(sealed, keepExisting: true) }) else {
            self.store.discard(sealed)
            self.endPartial(producer)
            throw CacheError.cancelled()
        }
        // Under the registry's lock: the run cannot be forgotten between
        // the look and the hold (its holds would outlive it).
        let orphan = self.registry.withLock { registry in
            self.cache.published(published, by: producer, for: registry.keeps(run) ? run.id : nil)
        }
        if orphan {
            // The run went while the file was renamed; this is the files thread, so in order.
            self.store.removeObject(atPath: published.path)
            throw CacheError.cancelled()
        }
        return published
    }

    /// Deletes files no run holds any more, on the files thread, each only if
    /// it is still not held when its turn comes and no export on any gateway
    /// refers to it. When the pool is stopping, NIO runs what is still queued
    /// elsewhere, alongside the files thread, which would break the order:
    /// then nothing is deleted, and the next start removes what no export
    /// refers to (as it does with a file kept because the database did not answer).
    func remove(_ paths: [String]) {
        for path in paths {
            self.pools.files.submit { state in
                guard state == .active, !self.cache.isHeld(path) else { return }
                self.removeUnreferenced(path)
            }
        }
    }

    /// Deletes a file of `objects/` unless an export on any gateway refers
    /// to it. Blocking: on the files thread.
    func removeUnreferenced(_ path: String) {
        let name = path.split(separator: "/").last.map(String.init) ?? ""
        let sha = String(name.prefix(64))
        guard Hex.isSHA256(sha) else {
            self.store.removeObject(atPath: path)
            return
        }
        do {
            _ = try self.journal.removeUnreferenced(sha256: sha) { self.store.removeObject(atPath: path) }
        } catch {
            self.logger.notice("cache file kept: the database could not say whether an export refers to it", metadata: [LogKey.cacheFile: "\(name)"])
        }
    }

    /// Opens a finished file for a download, before anything is promised to
    /// the client, and counts it as open in the ledger until it is closed (a
    /// deleted file's bytes stay on disk until then). Throws if the file is
    /// no longer in the cache.
    func openPublished(_ file: PublishedFile) async throws -> OpenedFile {
        let closer = FileCloser(threadPool: self.pools.closes)
        return try await self.pools.downloads.runIfActive {
            guard let token = self.cache.open(file.path) else {
                throw CacheError.failed("\(file.path) is no longer held")
            }
            let closed: @Sendable () -> Void = { self.cache.close(token) }
            do {
                return try OpenedFile(path: file.path, closer: closer, onClose: closed)
            } catch {
                closed()
                throw error
            }
        }
    }
}
