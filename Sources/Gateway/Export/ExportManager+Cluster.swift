import Cache
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The manager as one gateway of several on one database (see
/// `ExportJournal+Runs.swift` for the shared queue; `ClusterCoordinator`
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
        self.state.withLock { state in
            // Not before the journal is read: the restore builds the registry
            // anew, and queues again what this instance ran before it stopped.
            guard state.started, state.journalLoaded, !state.shuttingDown, state.claims.count + state.reservedSlots < self.limits.maxConcurrent else { return false }
            state.reservedSlots += 1
            return true
        }
    }

    func releaseSlot() {
        self.state.withLock { $0.reservedSlots = max(0, $0.reservedSlots - 1) }
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
        let (run, old) = self.state.withLock { state -> (ExportRun, ExportRun?) in
            state.reservedSlots = max(0, state.reservedSlots - 1)
            let existing = state.runs[row.id]
            let run: ExportRun
            var old: ExportRun?
            if let existing, existing.status == .queued, !existing.isInterrupted, state.following[row.id] == nil, state.claims[row.id] == nil {
                run = existing
            } else {
                run = ExportRun(id: row.id, request: request)
                if let existing {
                    state.replace(existing, with: run)
                    old = existing
                } else {
                    state.runs[row.id] = run
                    state.lastUsed[row.id] = Date()
                }
            }
            state.following[row.id] = nil
            state.claims[row.id] = Claimed(attempt: row.attempt, run: run)
            return (run, old)
        }
        if let old {
            let (_, cancellers) = old.interrupt(reason: "the gateway running this export stopped; it runs again")
            self.cancelQueries(cancellers)
        }
        self.logger.info("export claimed", metadata: [LogKey.runID: "\(row.id.uuidString.lowercased())", "gateway.export.attempt": "\(row.attempt)"])
        self.dispatch(run, attempt: row.attempt, partialName: row.partialName)
    }

    // MARK: Leases

    /// Renews the leases of the runs claimed here, with their progress; a
    /// run missing from the answer stops here. True when the database
    /// answered (or nothing is claimed). Cut off from the database for a
    /// whole lease since `lastRenewed`, this gateway stops its runs, since
    /// others may run them now.
    func renewLeases(lastRenewed: ContinuousClock.Instant) async -> Bool {
        let claimed = self.state.withLock { Array($0.claims) }
        guard !claimed.isEmpty else { return true }
        let renewals = claimed.map { id, claim in
            let snapshot = claim.run.snapshot()
            return ExportJournal.Renewal(id: id, attempt: claim.attempt, rows: snapshot.rowsWritten, bytes: snapshot.bytesWritten, totalRows: snapshot.totalRows)
        }
        do {
            let held = try await self.onDatabasePool { try $0.journal.renew(renewals, instance: $0.instanceID, leaseSeconds: $0.cluster.leaseSeconds) }
            let lost = claimed.map(\.key).filter { !held.contains($0) }
            if !lost.isEmpty { await self.refresh(lost) }
            return true
        } catch {
            guard ContinuousClock.now - lastRenewed > .seconds(self.cluster.leaseSeconds) else { return false }
            self.logger.warning("leases not renewed for LEASE_SECONDS; stopping the exports running here", metadata: ["gateway.exports.stopped": "\(claimed.count)"])
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
        self.state.withLock { state in
            state.runs.values.filter { ($0.status == .queued || $0.status == .running) && state.claims[$0.id] == nil }.map(\.id)
        }
    }

    /// Brings the runs kept here to their state in the database.
    func refresh(_ ids: [UUID]) async {
        guard let rows = try? await self.onDatabasePool({ try $0.journal.fetchRuns(ids) }) else { return }
        for row in rows { self.reconcile(row) }
    }

    /// Brings the run object kept here for `row` to the row's state.
    func reconcile(_ row: ExportJournal.RunRow) {
        if let claim = self.state.withLock({ $0.claims[row.id] }) {
            // Running here: only a cancel, or the loss of the claim, matters.
            if row.instance == self.instanceID, row.attempt == claim.attempt, row.state == .running || row.state == .completed || row.state == .failed { return }
            if row.state == .cancelled {
                self.cancel(claim.run)
            } else {
                let (_, cancellers) = claim.run.interrupt(reason: "another gateway runs this export now")
                self.cancelQueries(cancellers)
            }
            return
        }
        guard let run = self.state.withLock({ $0.runs[row.id] }) else { return }
        self.mirror(run, row)
    }

    private func mirror(_ current: ExportRun, _ row: ExportJournal.RunRow) {
        let followed = self.state.withLock { $0.following[row.id] }
        let begun = followed != nil || current.status != .queued || current.isInterrupted
        switch row.state {
        case .queued:
            if begun { _ = self.replaceRun(current) }
        case .running:
            if row.leaseExpired {
                // Its gateway stopped renewing: the readers of that attempt
                // abort; another gateway claims it soon.
                if begun { _ = self.replaceRun(current) }
                return
            }
            if let followed, followed.attempt == row.attempt {
                current.recordRemoteProgress(rows: row.rowsWritten, bytes: row.bytesWritten, totalRows: row.totalRows)
                return
            }
            // Claimed by this gateway, and its worker not started yet (an
            // admission here): the object is the one it will run, not a mirror.
            if row.instance == self.instanceID { return }
            guard let relative = row.partialPath, let path = self.store.sharedPartialPath(relative) else { return }
            let run = begun ? self.replaceRun(current) : current
            guard run.markRunning(at: row.startedAt ?? Date()) else { return }
            run.csv.begin(path: path)
            run.recordRemoteProgress(rows: row.rowsWritten, bytes: row.bytesWritten, totalRows: row.totalRows)
            self.state.withLock { state in
                if state.runs[row.id] === run { state.following[row.id] = Following(attempt: row.attempt, path: path) }
            }
        case .completed:
            guard current.status != .completed, let sha = row.sha256, let size = row.sizeBytes else { return }
            // Readers of another attempt's partial file may have other bytes:
            // they abort. A run object that ended here as cancelled or
            // failed while the run completed (restored from a journal whose
            // only rows of it were cancelled exports: the export that kept
            // it going had been deleted) cannot complete: a new one takes
            // its place, or an export joining the completed run read
            // `cancelled` (seen in a chaos run after a restart).
            let ended = current.status == .cancelled || current.status == .failed
            let run = (followed.map { $0.attempt != row.attempt } ?? false) || current.isInterrupted || ended ? self.replaceRun(current) : current
            if run.status == .queued { _ = run.markRunning(at: row.startedAt ?? Date()) }
            let file = PublishedFile(path: self.store.objectPath(sha256: sha, suffix: ".csv"), size: size, sha256: sha)
            let kept = self.state.withLock { state -> Bool in
                guard state.runs[row.id] === run else { return false }
                state.following[row.id] = nil
                state.ledger.hold(file)
                state.held[row.id, default: []].append(file.path)
                return true
            }
            if kept { _ = run.complete(file, rows: row.rowsWritten, at: row.completedAt ?? Date()) }
        case .failed:
            self.state.withLock { _ = $0.following.removeValue(forKey: row.id) }
            current.fail(CacheError.failed(row.error ?? "the export failed"))
        case .cancelled:
            self.state.withLock { _ = $0.following.removeValue(forKey: row.id) }
            self.cancel(current)
        }
    }

    /// A new object for a run in place of `old`, whose readers abort.
    private func replaceRun(_ old: ExportRun) -> ExportRun {
        let new = ExportRun(id: old.id, request: old.request)
        let replaced = self.state.withLock { state -> ExportRun? in
            guard state.runs[old.id] === old else { return state.runs[old.id] }
            state.replace(old, with: new)
            state.following[old.id] = nil
            return nil
        }
        if let replaced { return replaced }
        let (_, cancellers) = old.interrupt(reason: "the gateway running this export stopped; it runs again")
        self.cancelQueries(cancellers)
        return new
    }

    /// Lets the live readers of mirrors here see what the other gateways
    /// have written: the length of each partial file followed.
    func followPartials() async {
        let followed = self.state.withLock { state in
            state.following.compactMap { id, following in state.runs[id].map { ($0, following.path) } }
        }
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
            guard let id = UUID(uuidString: notification.payload), self.state.withLock({ $0.runs[id] != nil }) else { return }
            self.signals.refreshSoon([id])
        case .exports:
            guard let id = UUID(uuidString: notification.payload), self.state.withLock({ $0.jobs[id] != nil }) else { return }
            self.signals.recheckSoon([id])
        case nil:
            break
        }
    }

    /// The listener was away: notifications may have been missed, so every
    /// run and export kept here is looked up again.
    func resync() {
        let (runs, jobs) = self.state.withLock { (Array($0.runs.keys), Array($0.jobs.keys)) }
        self.signals.refreshSoon(runs)
        self.signals.recheckSoon(jobs)
        self.signals.wakeClaims()
    }

    /// Exports another gateway may have cancelled or deleted.
    func recheck(exports ids: [UUID]) async {
        guard let states = try? await self.onDatabasePool({ try $0.journal.exportStates(ids) }) else { return }
        for id in ids {
            guard let job = self.state.withLock({ $0.jobs[id] }) else { continue }
            switch states[id] {
            case nil:
                // Deleted: gone here too.
                let removals = self.state.withLock { state -> [String] in
                    guard state.jobs[id] === job else { return [] }
                    let fresh = state.runs[job.run.id] === job.run && self.isJoinable(job.run, state: state)
                    return state.leave(job, keepingRun: fresh)
                }
                job.run.detach(job.id, with: .cancelled())
                self.remove(removals)
            case true?:
                if job.markCancelled() { self.state.withLock { $0.removeMember(job) } }
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
            self.state.withLock { $0.expired[id] = ExpiredExport(at: record.expiredAt ?? Date(), owner: record.owner, evicted: record.evicted) }
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
