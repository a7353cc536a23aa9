import Cache
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The manager as one gateway of several on one database (see
/// `ExportJournal+Runs.swift` for the shared queue and `MirrorState` for how a run is followed; `ClusterCoordinator`
/// runs the loops that call in here):
///
/// - **Claims.** While a worker thread is free, the oldest queued run (or a
///   running one whose lease ran out) is claimed and run here: at once when
///   an admission here makes it, within 50 ms of a `gateway_queue`
///   notification, and once a second in any case.
/// - **Leases.** Every second the leases of the runs claimed here are
///   renewed, with their progress. A run missing from the answer was
///   cancelled or lost (claimed by another after this gateway failed to
///   renew it in time): it stops here. Cut off from the database for a whole
///   lease, this gateway stops its runs itself, since others may run them now.
/// - **Mirrors.** A run another gateway runs is kept here as a mirror: its
///   state comes from the database (on a `gateway_runs` notification, and
///   once a second), and its live readers here follow the partial file that
///   gateway writes in the shared cache folder (its length looked at every
///   50 ms). A mirror whose gateway stops (its lease runs out, or another
///   attempt starts) ends its readers with an abort, never a clean end, and
///   is replaced by a new object for the next attempt.
extension ExportManager {
    // MARK: Worker slots

    /// Takes a worker thread for a run about to be claimed; false when none is free.
    func reserveSlot() -> Bool {
        self.registry.withLock { $0.reserveSlot(workers: self.limits.maxConcurrent) }
    }

    func releaseSlot() {
        self.registry.withLock { $0.releaseSlot() }
    }

    // MARK: Claims

    /// Claims queued runs while worker threads are free.
    func claimWhileFree() async {
        // A gateway whose cache is full leaves queued runs to the others.
        while self.hasRoom(for: CopyPiece.stagingSize), self.reserveSlot() {
            let template = self.claimTemplate
            let row: ExportJournal.RunRow?
            do {
                row = try await self.onDatabasePool { try $0.journal.claimNext(template) }
            } catch {
                self.releaseSlot()
                return
            }
            guard let row else {
                self.releaseSlot()
                return
            }
            self.startClaimed(row)
        }
    }

    /// Runs a run this gateway has just claimed, on the worker slot reserved
    /// for it: on the run object kept here if it has not begun, else on a
    /// new one (the old one's readers, of an attempt that stopped, see an abort).
    func startClaimed(_ row: ExportJournal.RunRow) {
        guard let request = try? ExportRequest.parse(try QueryString.parse(row.query)) else {
            self.releaseSlot()
            self.logger.error("a queued run has an unreadable request; it fails", metadata: [LogKey.runID: "\(row.id.uuidString.lowercased())"])
            let (id, attempt, instance) = (row.id, row.attempt, self.instanceID)
            Task { try? await self.onDatabasePool { try $0.journal.fail(id, attempt: attempt, instance: instance, message: "the export's request could not be read") } }
            return
        }
        let now = Date()
        let (run, retired) = self.registry.withLock { registry in
            if !registry.knowsRun(row.id) { self.cache.touch(row.id, at: now) }
            return registry.claimed(row.id, attempt: row.attempt, request: request)
        }
        if case let (old, reason)? = retired { self.abort(old, reason) }
        self.logger.info("export claimed", metadata: [LogKey.runID: "\(row.id.uuidString.lowercased())", LogKey.exportAttempt: "\(row.attempt)"])
        self.dispatch(run, attempt: row.attempt, partialName: row.partialName)
    }

    // MARK: Leases

    /// Renews the leases of the runs claimed here, with their progress; a
    /// run missing from the answer stops here. True when the database
    /// answered (or nothing is claimed). Cut off from the database for a
    /// whole lease since `lastRenewed`, this gateway stops its runs, since
    /// others may run them now.
    func renewLeases(lastRenewed: ContinuousClock.Instant) async -> Bool {
        let claimed = self.registry.withLock { $0.claimed }
        guard !claimed.isEmpty else { return true }
        let renewals = claimed.map { id, claim in
            let snapshot = claim.run.snapshot()
            return ExportJournal.Renewal(id: id, attempt: claim.attempt, rows: snapshot.rowsWritten, bytes: snapshot.bytesWritten, totalRows: snapshot.totalRows)
        }
        do {
            let held = try await self.onDatabasePool { try $0.journal.renew(renewals, instance: $0.instanceID, leaseSeconds: $0.cluster.leaseSeconds) }
            let lost = claimed.map(\.id).filter { !held.contains($0) }
            if !lost.isEmpty { await self.refresh(lost) }
            return true
        } catch {
            guard ContinuousClock.now - lastRenewed > .seconds(self.cluster.leaseSeconds) else { return false }
            self.logger.warning("leases not renewed for LEASE_SECONDS; stopping the exports running here", metadata: [LogKey.exportsStopped: "\(claimed.count)"])
            for (_, claim) in claimed {
                let (_, cancellers) = claim.run.interrupt(reason: "the gateway lost its database; the export runs again")
                self.cancelQueries(cancellers)
            }
            return false
        }
    }

    // MARK: Mirrors

    /// The mirrors still under way: looked up once a second.
    var mirrorsUnderWay: [UUID] {
        self.registry.withLock { $0.mirrorsUnderWay }
    }

    /// Brings the runs kept here to their state in the database.
    func refresh(_ ids: [UUID]) async {
        guard let rows = try? await self.onDatabasePool({ try $0.journal.fetchRuns(ids) }) else { return }
        for row in rows { self.reconcile(row) }
    }

    /// Brings the run object kept here for `row` to the row's state: what
    /// `MirrorState` says to do, done (on the object a worker here runs, if
    /// it is claimed here).
    func reconcile(_ row: ExportJournal.RunRow) {
        let (known, run) = self.registry.withLock { ($0.mirrorState(of: row.id), $0.current(row.id)) }
        var mirror = known
        let actions = mirror.handle(.row(self.mirrorRow(row)))
        guard let run else { return }
        self.perform(actions, on: run, row: row)
    }

    /// What `MirrorState` needs of a row.
    private func mirrorRow(_ row: ExportJournal.RunRow) -> MirrorState.Row {
        let here = row.instance == self.instanceID
        switch row.state {
        case .queued:
            return .queued
        case .running:
            let path = row.partialPath.flatMap { self.store.sharedPartialPath($0) }
            return .running(attempt: row.attempt, here: here, leaseExpired: row.leaseExpired, partialPath: path)
        case .completed:
            let file = row.sha256.flatMap { sha in
                row.sizeBytes.map { PublishedFile(path: self.store.objectPath(sha256: sha, suffix: ".csv"), size: $0, sha256: sha) }
            }
            return .completed(attempt: row.attempt, here: here, file: file)
        case .failed:
            return .failed(attempt: row.attempt, here: here, message: row.error ?? "the export failed")
        case .cancelled:
            return .cancelled
        }
    }

    /// Does what `MirrorState` asked, in order, to `current` and the objects
    /// that replace it; the row gives the progress and the times.
    private func perform(_ actions: [MirrorState.Action], on current: ExportRun, row: ExportJournal.RunRow) {
        var run = current
        for action in actions {
            switch action {
            case .replace(let reason):
                run = self.replaceRun(run, reason)
            case .recordProgress:
                run.recordRemoteProgress(rows: row.rowsWritten, bytes: row.bytesWritten, totalRows: row.totalRows)
            case .follow(let attempt, let path):
                guard run.markRunning(at: row.startedAt ?? Date()) else { return }
                run.csv.begin(path: path)
                run.recordRemoteProgress(rows: row.rowsWritten, bytes: row.bytesWritten, totalRows: row.totalRows)
                self.registry.withLock { $0.follow(run, attempt: attempt, path: path) }
            case .complete(let file):
                if run.status == .queued { _ = run.markRunning(at: row.startedAt ?? Date()) }
                let kept = self.registry.withLock { registry in
                    guard registry.mirrorCompleted(run) else { return false }
                    self.cache.hold(file, for: row.id)
                    return true
                }
                if kept { _ = run.complete(file, rows: row.rowsWritten, at: row.completedAt ?? Date()) }
            case .stopFollowing:
                self.registry.withLock { $0.stopFollowing(row.id) }
            case .fail(let message):
                run.fail(CacheError.failed(message))
            case .cancel, .cancelClaimed:
                self.cancel(run)
            case .interrupt(let reason), .interruptClaimed(let reason):
                self.abort(run, reason)
            case .keepNew, .runClaimed:
                // Claims are `startClaimed`'s; a row never asks for one.
                break
            }
        }
    }

    /// A new object for a run in place of `old`, whose readers abort; the
    /// object kept now if another already took `old`'s place.
    private func replaceRun(_ old: ExportRun, _ reason: MirrorState.AbortReason) -> ExportRun {
        let new = ExportRun(id: old.id, request: old.request)
        let replaced = self.registry.withLock { $0.replacing(old, with: new) }
        if let replaced { return replaced }
        self.abort(old, reason)
        return new
    }

    /// Stops an object for good here (replaced, or its claim lost, or a
    /// shutdown): its live readers abort with the reason, its queries are cancelled.
    private func abort(_ run: ExportRun, _ reason: MirrorState.AbortReason) {
        let (_, cancellers) = run.interrupt(reason: reason.message)
        self.cancelQueries(cancellers)
    }

    /// Lets the live readers of mirrors here see what the other gateways
    /// have written: the length of each partial file followed.
    func followPartials() async {
        let followed = self.registry.withLock { $0.followedPartials }
        guard !followed.isEmpty else { return }
        let lengths = try? await self.pools.downloads.runIfActive {
            followed.map { run, path -> (ExportRun, Int?) in
                var info = stat()
                return (run, stat(path, &info) == 0 ? Int(info.st_size) : nil)
            }
        }
        for case (let run, let length?) in lengths ?? [] { run.csv.append(length: length) }
    }

    // MARK: Notifications

    /// A notification from the database (`ClusterListener`).
    func noticed(_ notification: PostgresConnection.Notification) {
        switch ClusterChannel(rawValue: notification.channel) {
        case .queue:
            self.signals.wakeClaims()
        case .runs:
            guard let id = UUID(uuidString: notification.payload), self.registry.withLock({ $0.knowsRun(id) }) else { return }
            self.signals.refreshSoon([id])
        case .exports:
            guard let id = UUID(uuidString: notification.payload), self.registry.withLock({ $0.knowsJob(id) }) else { return }
            self.signals.recheckSoon([id])
        case nil:
            break
        }
    }

    /// The listener was away: notifications may have been missed, so every
    /// run and export kept here is looked up again.
    func resync() {
        let (runs, jobs) = self.registry.withLock { $0.allIDs }
        self.signals.refreshSoon(runs)
        self.signals.recheckSoon(jobs)
        self.signals.wakeClaims()
    }

    /// Exports another gateway may have cancelled or deleted.
    func recheck(exports ids: [UUID]) async {
        guard let states = try? await self.onDatabasePool({ try $0.journal.exportStates(ids) }) else { return }
        for id in ids {
            guard let job = self.registry.withLock({ $0.job(id) }) else { continue }
            switch states[id] {
            case nil:
                // Deleted: gone here too.
                let removals = self.registry.withLock { registry -> [String] in
                    guard registry.job(id) === job else { return [] }
                    return registry.leave(job, keepingFreshRun: true) { self.isJoinable($0) }.map { self.cache.drop($0) } ?? []
                }
                job.run.detach(job.id, with: .cancelled())
                self.remove(removals)
            case true?:
                if job.markCancelled() { self.registry.withLock { $0.cancelled(job) } }
            case false?:
                break
            }
        }
    }

    // MARK: Look-ups of other gateways' exports

    enum Fetched {
        case found(ExportJob)
        case expired(owner: String?, evicted: Bool)
        case notFound
        case unavailable
    }

    /// An export this gateway does not know, from the database.
    func fetch(_ id: UUID) async -> Fetched {
        let fetched: (ExportJournal.Record, ExportJournal.RunRow?)?
        do {
            fetched = try await self.onDatabasePool { try $0.journal.fetchExport(id) }
        } catch {
            return .unavailable
        }
        guard let (record, row) = fetched else { return .notFound }
        if record.expiredAt != nil || Date().timeIntervalSince(record.createdAt) >= self.exportTTL {
            self.registry.withLock { $0.rememberExpired(id, ExpiredExport(at: record.expiredAt ?? Date(), owner: record.owner, evicted: record.evicted)) }
            return .expired(owner: record.owner, evicted: record.evicted)
        }
        guard let row, let request = try? ExportRequest.parse(try QueryString.parse(record.query)) else { return .notFound }
        let job = self.adopt(exportID: record.id, owner: record.owner, createdAt: record.createdAt, cancelledAt: record.cancelledAt, row: row, request: request)
        // A cancel or a delete committed after the read above may have been
        // notified before the export was known here (and ignored): look again.
        self.signals.recheckSoon([job.id])
        self.signals.refreshSoon([row.id])
        return .found(job)
    }
}
