import Cache
import Foundation

/// What this gateway knows of the exports and their runs: the exports
/// (`ExportJob`) by id, the run object kept for each run, the exports of
/// each run still needing it (members), the runs claimed here with their
/// attempt, the worker slots promised to claims under way, the other
/// gateways' partial files followed (mirrors), the ids expired lately, and
/// whether the gateway has started, read its journal or begun to stop.
///
/// A value type with no I/O, no clock and no lock of its own: the manager
/// keeps it under its one lock, calls one method per event, and does what
/// comes back (files to remove, runs to interrupt) after the lock is let
/// go. Time comes in with the events. Its state is private to this file:
/// every change is a method here, named after the event.
///
/// It reads the run objects' lifecycles (`ExportRun.status`), which take
/// the run's own lock: always after the manager's, never before. What the
/// cache holds is not here but in `EvictingCacheBudget`; where a decision
/// needs it (is a finished run's file still held?) it is asked in.
struct ExportRegistry {
    /// A run this gateway has claimed.
    struct Claimed {
        let attempt: Int
        let run: ExportRun
    }

    /// The partial file of another gateway's run, as this one follows it.
    struct Following {
        let attempt: Int
        let path: String
    }

    private var jobs: [UUID: ExportJob] = [:]
    private var runs: [UUID: ExportRun] = [:]
    /// The exports of each run that have not been cancelled or deleted
    /// (those this gateway knows of: others may have more).
    private var members: [UUID: Set<UUID>] = [:]
    /// The runs this gateway runs now, with their attempt (`gateway.runs`).
    private var claims: [UUID: Claimed] = [:]
    /// Worker threads promised to an admission or a claim under way.
    private var reservedSlots = 0
    /// Runs another gateway runs whose partial file this one follows.
    private var following: [UUID: Following] = [:]
    /// Exports past EXPORT_TTL, when they expired and whose they were:
    /// answered 410 (to their owner) rather than 404 for another
    /// EXPORT_TTL, then forgotten (as the journal does).
    private var expired: [UUID: ExpiredExport] = [:]
    private(set) var shuttingDown = false
    /// The journal has been read and its exports restored (`loadJournal`).
    private(set) var journalLoaded = false
    /// The worker threads have started: runs may be claimed.
    private var started = false

    // MARK: The gateway's phases

    mutating func markStarted() {
        self.started = true
    }

    mutating func markJournalLoaded() {
        self.journalLoaded = true
    }

    /// A shutdown begins: the runs queued or running here, to interrupt
    /// (none the second time).
    mutating func beginShutdown() -> [ExportRun] {
        guard !self.shuttingDown else { return [] }
        self.shuttingDown = true
        return self.runs.values.filter { $0.status == .queued || $0.status == .running }
    }

    // MARK: Exports

    func job(_ id: UUID) -> ExportJob? { self.jobs[id] }

    func expiredExport(_ id: UUID) -> ExpiredExport? { self.expired[id] }

    func knowsJob(_ id: UUID) -> Bool { self.jobs[id] != nil }

    func knowsRun(_ id: UUID) -> Bool { self.runs[id] != nil }

    func run(_ id: UUID) -> ExportRun? { self.runs[id] }

    /// True while `run` is the object kept for its id (not forgotten, not replaced).
    func keeps(_ run: ExportRun) -> Bool { self.runs[run.id] === run }

    var jobCount: Int { self.jobs.count }

    /// The ids of every run and export kept (looked up again after the listener was away).
    var allIDs: (runs: [UUID], jobs: [UUID]) { (Array(self.runs.keys), Array(self.jobs.keys)) }

    /// Exports asked for `ttl` or longer before `now`.
    func jobs(olderThan ttl: TimeInterval, now: Date) -> [ExportJob] {
        self.jobs.values.filter { now.timeIntervalSince($0.createdAt) >= ttl }
    }

    /// A run of `key` claimed here that has failed or stopped, whose end
    /// the database may not have yet: not one to join.
    func hasDoomedClaim(key: String) -> Bool {
        self.claims.values.contains { claim in
            claim.run.request.cacheKey == key && (claim.run.status == .failed || claim.run.status == .cancelled || claim.run.isInterrupted)
        }
    }

    /// An admitted (or looked-up) export: its job on the run object kept
    /// for `runID` (made if new). The same job if it is known already.
    /// Returns it, and the run's id, now used.
    mutating func adopt(exportID: UUID, owner: String?, createdAt: Date, cancelledAt: Date?, runID: UUID, request: ExportRequest) -> ExportJob {
        let run: ExportRun
        if let existing = self.runs[runID] {
            run = existing
        } else {
            run = ExportRun(id: runID, request: request)
            self.runs[runID] = run
        }
        if let job = self.jobs[exportID] { return job }
        let job = ExportJob(id: exportID, run: run, owner: owner, createdAt: createdAt, cancelledAt: cancelledAt)
        self.jobs[job.id] = job
        if cancelledAt == nil { self.members[run.id, default: []].insert(job.id) }
        return job
    }

    /// A restored run with its exports (`ExportManager+Restore`); false,
    /// and nothing changes, when the run is known already.
    mutating func restore(_ run: ExportRun, members: Set<UUID>, jobs: [ExportJob]) -> Bool {
        guard self.runs[run.id] == nil else { return false }
        self.runs[run.id] = run
        self.members[run.id] = members
        for job in jobs { self.jobs[job.id] = job }
        return true
    }

    /// An export was cancelled: its run no longer counts it as needing it.
    mutating func cancelled(_ job: ExportJob) {
        self.members[job.run.id]?.remove(job.id)
    }

    /// Takes an ended, deleted or expiring export off its run (if its id is
    /// still known); when it was the run's last, the
    /// run is forgotten, unless `keepingFreshRun` and the run may still be
    /// joined (the fresh answer to its request: `isJoinable`). Returns the
    /// run forgotten, whose holds in the cache go.
    mutating func leave(_ job: ExportJob, keepingFreshRun: Bool = false, joinable: (ExportRun) -> Bool = { _ in false }) -> UUID? {
        guard self.jobs[job.id] != nil else { return nil }
        let keep = keepingFreshRun && self.runs[job.run.id] === job.run && joinable(job.run)
        return self.remove(job, keepingRun: keep)
    }

    /// An admitted export taken back before its 202 (no room in the cache):
    /// it goes, and its run unless another export joined it, even when a
    /// notification of the take-back removed the export here first (and
    /// kept the run, queued then, as the fresh answer). Returns the run forgotten.
    mutating func takeBack(_ job: ExportJob) -> UUID? {
        self.remove(job, keepingRun: false)
    }

    private mutating func remove(_ job: ExportJob, keepingRun: Bool) -> UUID? {
        let run = job.run
        self.jobs[job.id] = nil
        self.members[run.id]?.remove(job.id)
        guard self.members[run.id]?.isEmpty ?? true else { return nil }
        self.members[run.id] = nil
        return keepingRun ? nil : self.forget(run)
    }

    /// An export past EXPORT_TTL (or evicted) expires at `at`: remembered
    /// for 410 answers, and taken off its run. Returns the run forgotten.
    mutating func expire(_ job: ExportJob, at date: Date, evicted: Bool) -> UUID? {
        guard self.jobs[job.id] != nil else { return nil }
        self.expired[job.id] = ExpiredExport(at: date, owner: job.owner, evicted: evicted)
        return self.leave(job)
    }

    /// An export known expired from the journal.
    mutating func rememberExpired(_ id: UUID, _ expired: ExpiredExport) {
        self.expired[id] = expired
    }

    /// Drops the ids expired for `ttl` or longer (404 from then on).
    mutating func forgetExpired(olderThan ttl: TimeInterval, now: Date) {
        self.expired = self.expired.filter { now.timeIntervalSince($0.value.at) < ttl }
    }

    /// Drops the runs no export here needs and no claim runs: mirrors of
    /// other gateways' runs (looked up again if asked for) and ended runs
    /// no longer joinable. Returns their ids, whose holds in the cache go.
    mutating func forgetStaleRuns(joinable: (ExportRun) -> Bool) -> [UUID] {
        let stale = self.runs.values.filter { run in
            guard self.members[run.id]?.isEmpty ?? true, self.claims[run.id] == nil else { return false }
            return run.status == .queued || run.status == .running || !joinable(run)
        }
        return stale.compactMap { self.forget($0) }
    }

    /// Drops a run no export needs; returns its id if it was kept.
    mutating func forget(_ run: ExportRun) -> UUID? {
        guard self.runs[run.id] === run else { return nil }
        self.runs[run.id] = nil
        self.members[run.id] = nil
        self.following[run.id] = nil
        return run.id
    }

    // MARK: The cache's view

    /// Finished runs no export needs, other than `writing`: what may be evicted.
    func evictable(except writing: ExportRun?) -> [ExportRun] {
        self.runs.values.filter { run in run !== writing && (self.members[run.id]?.isEmpty ?? true) && run.status == .completed }
    }

    /// Forgets runs the cache evicted (their holds are gone already).
    mutating func evicted(_ ids: [UUID]) {
        for id in ids {
            if let run = self.runs[id] { _ = self.forget(run) }
        }
    }

    /// Every run kept but `excluded`, with the owners of the exports that
    /// still need it and those exports: what `CacheRoom` decides from.
    func roomView(excluding excluded: UUID) -> (runs: [ExportRun], owners: [UUID: Set<String>], exports: [UUID: [ExportJob]]) {
        var owners: [UUID: Set<String>] = [:]
        var exports: [UUID: [ExportJob]] = [:]
        for job in self.jobs.values where self.members[job.run.id]?.contains(job.id) ?? false {
            owners[job.run.id, default: []].insert(job.owner ?? "")
            exports[job.run.id, default: []].append(job)
        }
        return (self.runs.values.filter { $0.id != excluded }, owners, exports)
    }

    /// Exports by state, runs queued, runs claimed: what `/metrics` shows.
    var counts: (jobs: [ExportJob], queued: Int, running: Int) {
        (Array(self.jobs.values), self.runs.values.filter { $0.status == .queued }.count, self.claims.count)
    }

    // MARK: Worker slots and claims

    /// Takes a worker slot for a run about to be claimed; false when none is
    /// free, or runs may not be claimed yet (not before the journal is
    /// read: the restore builds the registry anew, and queues again what
    /// this instance ran before it stopped) or any more.
    mutating func reserveSlot(workers: Int) -> Bool {
        guard self.started, self.journalLoaded, !self.shuttingDown, self.claims.count + self.reservedSlots < workers else { return false }
        self.reservedSlots += 1
        return true
    }

    mutating func releaseSlot() {
        self.reservedSlots = max(0, self.reservedSlots - 1)
    }

    func claim(of id: UUID) -> Claimed? { self.claims[id] }

    var claimed: [(id: UUID, claim: Claimed)] { self.claims.map { ($0.key, $0.value) } }

    /// This gateway claimed run `id` at `attempt`, on the slot reserved for
    /// it: `MirrorState` says whether it runs on the object kept here (one
    /// that has not begun) or on a new one. Returns the object to run, and
    /// the one it replaced, whose readers (of an attempt that stopped) must
    /// abort, with the reason.
    mutating func claimed(_ id: UUID, attempt: Int, request: ExportRequest) -> (run: ExportRun, replaced: (run: ExportRun, reason: MirrorState.AbortReason)?) {
        self.reservedSlots = max(0, self.reservedSlots - 1)
        var mirror = self.mirrorState(of: id)
        let existing = self.runs[id]
        var run = existing ?? ExportRun(id: id, request: request)
        var replaced: (run: ExportRun, reason: MirrorState.AbortReason)?
        for action in mirror.handle(.claimedHere(attempt: attempt)) {
            switch action {
            case .keepNew, .replace:
                let new = ExportRun(id: id, request: request)
                self.put(new, replacing: existing)
                if case .replace(let reason) = action, let existing { replaced = (existing, reason) }
                run = new
            case .runClaimed(let attempt):
                self.following[id] = nil
                self.claims[id] = Claimed(attempt: attempt, run: run)
            case .recordProgress, .follow, .complete, .stopFollowing, .fail, .cancel, .interrupt, .cancelClaimed, .interruptClaimed:
                break
            }
        }
        return (run, replaced)
    }

    /// A run claimed here ended: its claim goes, and so does the run if it
    /// was published after its last export was cancelled. Returns the run
    /// forgotten, whose holds in the cache go.
    mutating func runEnded(_ run: ExportRun, publishedAfterCancel: Bool) -> UUID? {
        if self.claims[run.id]?.run === run { self.claims[run.id] = nil }
        guard publishedAfterCancel, self.members[run.id]?.isEmpty ?? true else { return nil }
        return self.forget(run)
    }

    // MARK: Mirrors

    /// What this gateway knows of a run, for `MirrorState`.
    func mirrorState(of id: UUID) -> MirrorState {
        let run = self.runs[id]
        return MirrorState(status: run?.status, interrupted: run?.isInterrupted ?? false, following: self.following[id]?.attempt, claimed: self.claims[id]?.attempt)
    }

    /// The object a row's actions apply to: the one a worker here runs if
    /// the run is claimed here, else the one kept.
    func current(_ id: UUID) -> ExportRun? { self.claims[id]?.run ?? self.runs[id] }

    func following(_ id: UUID) -> Following? { self.following[id] }

    /// The runs queued or running that no claim here runs: mirrors, looked up once a second.
    var mirrorsUnderWay: [UUID] {
        self.runs.values.filter { ($0.status == .queued || $0.status == .running) && self.claims[$0.id] == nil }.map(\.id)
    }

    /// The partial files followed, with the run objects whose readers follow them.
    var followedPartials: [(run: ExportRun, path: String)] {
        self.following.compactMap { id, following in self.runs[id].map { ($0, following.path) } }
    }

    /// `run` (still the one kept) follows attempt `attempt`'s partial file at `path`.
    mutating func follow(_ run: ExportRun, attempt: Int, path: String) {
        guard self.runs[run.id] === run else { return }
        self.following[run.id] = Following(attempt: attempt, path: path)
    }

    /// The run's partial file is no longer followed (it ended, failed, was cancelled).
    mutating func stopFollowing(_ id: UUID) {
        self.following[id] = nil
    }

    /// A new object for a run in place of `old` (a new attempt): the run's
    /// exports here follow it from now on. Nil when `old` is no longer the
    /// one kept: then the kept one is returned instead, and nothing changes.
    mutating func replacing(_ old: ExportRun, with new: ExportRun) -> ExportRun? {
        guard self.runs[old.id] === old else { return self.runs[old.id] }
        self.put(new, replacing: old)
        return nil
    }

    /// `new` as the run's object in place of `old` (the run's exports here
    /// follow it from now on), or as its first; nothing followed for it.
    private mutating func put(_ new: ExportRun, replacing old: ExportRun?) {
        if let old {
            self.replace(old, with: new)
        } else {
            self.runs[new.id] = new
        }
        self.following[new.id] = nil
    }

    /// A mirror's run completed elsewhere: it stops following, if `run` is
    /// still the one kept. True when it is (then the file is held for it).
    mutating func mirrorCompleted(_ run: ExportRun) -> Bool {
        guard self.runs[run.id] === run else { return false }
        self.following[run.id] = nil
        return true
    }

    private mutating func replace(_ old: ExportRun, with new: ExportRun) {
        guard self.runs[old.id] === old else { return }
        self.runs[new.id] = new
        for id in self.members[old.id] ?? [] {
            guard let job = self.jobs[id], job.run === old else { continue }
            self.jobs[id] = ExportJob(id: job.id, run: new, owner: job.owner, createdAt: job.createdAt, cancelledAt: job.cancelledAt)
        }
    }
}

/// An export past EXPORT_TTL, remembered for 410 answers to its owner.
struct ExpiredExport: Sendable {
    let at: Date
    let owner: String?
    /// Expired early: its file was evicted to make room for a new export.
    var evicted = false
}
