import Cache

/// What this gateway knows locally of one run of the shared queue, and what
/// it does when it learns more, as a pure state machine: events go in (a row
/// of `gateway.runs` seen, a local cancel, a shutdown, a claim here), the
/// actions to take on the run object kept here come out. No I/O, no lock, no
/// clock: `ExportManager+Cluster.swift` derives the state from what it holds
/// (the run object's status and interruption, `following`, `claims`), asks,
/// and performs the actions.
///
///     absent ────── claim here: keep a new object ──────────┐
///                                                            ▼
///     notBegun ──── claim here: run this very object ──▶ claimed(n)
///       │  ▲                                      row queued, or of another attempt or
///       │  │                                      gateway: interrupt the worker; row
///       │  │                                      cancelled, local cancel: cancel it;
///       │  │                                      shutdown: interrupt it (it stays
///       │  │                                      claimed until the worker ends)
///       │  └── row queued, or running past its lease: a new
///       │      object, the old one's readers abort ────────┐
///       │ row running at n elsewhere:                       │
///       │ mark running, follow its file                     │
///       ▼                                                   │
///     following(n) ─────────────────────────────────────────┘
///       │  ├── running at n: record progress (stays)
///       │  └── running at m≠n: a new object, following(m)
///       ├── row completed (at n: in place; at m≠n: a new object) ──▶ ended(completed)
///       ├── row failed, row cancelled, local cancel ─────────────▶ ended(failed | cancelled)
///       └── shutdown ──────────────────────────────────────────────▶ interrupted
///
///     started, interrupted, ended: as following, except that
///       - interrupted, ended(failed | cancelled) + row completed ─▶ a new object, ended(completed)
///       - ended(completed) + row completed: nothing
///       - any of them + row running at m (not the attempt followed) elsewhere
///                                                      ─▶ a new object, following(m)
///       - any of them + claim here ───────────────────▶ a new object, claimed(n)
///       - interrupted + row failed, ended + row failed or cancelled: the
///         object refuses it (it stays as it is; nothing is followed any more)
///       - interrupted + shutdown, ended + local cancel or shutdown: nothing
///     following, started, interrupted, ended + row queued, or running past
///       its lease ─▶ a new object, notBegun (notBegun stays as it is).
///
/// `started` is an object marked running that nothing follows or claims (a
/// claim's worker that left it so, or the moment before `following` is
/// recorded); it completes in place like `following` of the same attempt.
/// `interrupted` and `ended` remember the attempt they were following, if any:
/// a running row of that attempt only updates the progress shown, as it
/// does while following.
///
/// Every event is defined in every state (a `switch` with no `default`).
/// Many are no-ops on purpose; the comments at each say why. Every branch
/// is what the manager did before this type existed (several were found by
/// the cluster and chaos tests); `MirrorStateTests` walks them all.
struct MirrorState: Equatable, Sendable {
    enum Outcome: Equatable, Sendable {
        case completed, failed, cancelled
    }

    enum Phase: Equatable, Sendable {
        /// No run object is kept here (forgotten, or never known).
        case absent
        /// Queued here, not begun: not followed, not claimed, not interrupted.
        /// The object can be used as it is by whoever runs it.
        case notBegun
        /// Another gateway runs attempt `attempt`; this object follows its
        /// partial file (marked running, not interrupted).
        case following(attempt: Int)
        /// Marked running, neither followed nor claimed nor interrupted.
        case started
        /// A worker here runs attempt `attempt` (a claim is recorded).
        case claimed(attempt: Int)
        /// Stopped while queued or running (a shutdown, a lost lease, a lost
        /// publish): its readers aborted; it never runs or ends here.
        case interrupted(following: Int?)
        /// Ended here as the row ended, or by a local cancel, or restored so.
        case ended(Outcome, following: Int?)
    }

    /// Why a replaced or stopped object's live readers abort (never a clean end).
    enum AbortReason: Equatable, Sendable {
        /// The attempt it showed stopped; another runs it.
        case attemptStopped
        /// The claim here was lost: another gateway runs it.
        case anotherGatewayRuns
        /// This gateway is shutting down.
        case shutdown

        var message: String {
            switch self {
            case .attemptStopped: "the gateway running this export stopped; it runs again"
            case .anotherGatewayRuns: "another gateway runs this export now"
            case .shutdown: "the server is shutting down"
            }
        }
    }

    /// The row of `gateway.runs` as far as the decisions need it; the class
    /// keeps the row for the numbers and times the actions record.
    enum Row: Equatable, Sendable {
        case queued
        /// `here`: this gateway is the row's instance. `partialPath`: the
        /// partial file's full path, nil if the row has none (or an unsafe one).
        case running(attempt: Int, here: Bool, leaseExpired: Bool, partialPath: String?)
        /// `file`: nil if the row lacks its hash or size.
        case completed(attempt: Int, here: Bool, file: PublishedFile?)
        case failed(attempt: Int, here: Bool, message: String)
        case cancelled
    }

    enum Event: Equatable, Sendable {
        case row(Row)
        /// An export here cancelled the run (`ExportManager.cancel(_:)`).
        case localCancel
        /// The followed partial file is not there (any more).
        case partialFileGone
        /// This gateway began to shut down.
        case shutdown
        /// This gateway claimed attempt `attempt` and will run it.
        case claimedHere(attempt: Int)
    }

    enum Action: Equatable, Sendable {
        /// A new object in place of the one kept (not followed); the old
        /// one's live readers abort with the reason. Later actions apply to the new one.
        case replace(AbortReason)
        /// Record a new object for the claim (none was kept).
        case keepNew
        /// Show the row's progress on the object.
        case recordProgress
        /// Mark the object running (if it refuses: stop here), its file
        /// follows the partial file at `path`, record the progress, and
        /// remember that attempt `attempt` is followed.
        case follow(attempt: Int, path: String)
        /// Mark it running if it is queued, hold the file, stop following,
        /// complete the object with the file.
        case complete(PublishedFile)
        /// Forget the followed attempt, if any.
        case stopFollowing
        /// Fail the object (refused by it once it ended or was interrupted).
        case fail(String)
        /// Cancel the object (a no-op on an ended one).
        case cancel
        /// Stop the object for good here: its live readers abort.
        case interrupt(AbortReason)
        /// Record the claim at `attempt` and hand the object to a worker.
        case runClaimed(attempt: Int)
        /// Cancel the run the worker here runs (its query too).
        case cancelClaimed
        /// Stop the worker here (its query too); its readers abort.
        case interruptClaimed(AbortReason)
    }

    private(set) var phase: Phase

    init(_ phase: Phase) {
        self.phase = phase
    }

    /// The state as the manager holds it: `status` and `interrupted` of the
    /// object kept (nil status: none), the attempt followed, the attempt claimed.
    init(status: ExportLifecycle.Status?, interrupted: Bool, following: Int?, claimed: Int?) {
        if let claimed {
            self.phase = .claimed(attempt: claimed)
            return
        }
        switch status {
        case nil: self.phase = .absent
        case .completed?: self.phase = .ended(.completed, following: following)
        case .failed?: self.phase = .ended(.failed, following: following)
        case .cancelled?: self.phase = .ended(.cancelled, following: following)
        case .queued?, .running?:
            if interrupted {
                self.phase = .interrupted(following: following)
            } else if let following {
                self.phase = .following(attempt: following)
            } else {
                self.phase = status == .queued ? .notBegun : .started
            }
        }
    }

    /// The attempt whose partial file was followed (in any phase that remembers one).
    var followed: Int? {
        switch self.phase {
        case .following(let attempt): attempt
        case .interrupted(let following), .ended(_, let following): following
        case .absent, .notBegun, .started, .claimed: nil
        }
    }

    /// Takes an event; returns what to do, in order, to the object kept.
    mutating func handle(_ event: Event) -> [Action] {
        switch (self.phase, event) {
        // MARK: Claimed here: the worker decides, unless the run left it.

        case (.claimed(let claim), .row(let row)):
            switch row {
            case .running(let attempt, let here, _, _), .completed(let attempt, let here, _), .failed(let attempt, let here, _):
                // The row of this claim: the worker ends it.
                if here, attempt == claim { return [] }
                return [.interruptClaimed(.anotherGatewayRuns)]
            case .queued:
                // Handed back, or its lease lost and requeued: not this worker's any more.
                return [.interruptClaimed(.anotherGatewayRuns)]
            case .cancelled:
                return [.cancelClaimed]
            }
        case (.claimed, .localCancel):
            return [.cancelClaimed]
        case (.claimed, .shutdown):
            // The worker stops; it hands the run back to the queue.
            return [.interruptClaimed(.shutdown)]
        case (.claimed, .partialFileGone):
            // Its own partial file: not followed.
            return []
        case (.claimed, .claimedHere(let attempt)):
            // Claimed again (its own lease ran out meanwhile): a new object for the new attempt.
            self.phase = .claimed(attempt: attempt)
            return [.replace(.attemptStopped), .runClaimed(attempt: attempt)]

        // MARK: No object kept here

        case (.absent, .row), (.absent, .localCancel), (.absent, .partialFileGone), (.absent, .shutdown):
            // Nothing here shows this run: nothing to keep in step.
            return []
        case (.absent, .claimedHere(let attempt)):
            self.phase = .claimed(attempt: attempt)
            return [.keepNew, .runClaimed(attempt: attempt)]

        // MARK: An object kept here, not claimed

        case (.notBegun, .row(.queued)):
            return []
        case (.following, .row(.queued)), (.started, .row(.queued)), (.interrupted, .row(.queued)), (.ended, .row(.queued)):
            // The attempt it showed stopped (handed back, or run again):
            // its readers abort; the next attempt starts from a fresh object.
            self.phase = .notBegun
            return [.replace(.attemptStopped)]

        case (.notBegun, .row(.running(let attempt, let here, let leaseExpired, let path))),
            (.following, .row(.running(let attempt, let here, let leaseExpired, let path))),
            (.started, .row(.running(let attempt, let here, let leaseExpired, let path))),
            (.interrupted, .row(.running(let attempt, let here, let leaseExpired, let path))),
            (.ended, .row(.running(let attempt, let here, let leaseExpired, let path))):
            return self.running(attempt: attempt, here: here, leaseExpired: leaseExpired, path: path)

        case (.notBegun, .row(.completed(let attempt, _, let file))),
            (.following, .row(.completed(let attempt, _, let file))),
            (.started, .row(.completed(let attempt, _, let file))),
            (.interrupted, .row(.completed(let attempt, _, let file))),
            (.ended, .row(.completed(let attempt, _, let file))):
            return self.completed(attempt: attempt, file: file)

        case (.notBegun, .row(.failed(_, _, let message))), (.following, .row(.failed(_, _, let message))), (.started, .row(.failed(_, _, let message))):
            self.phase = .ended(.failed, following: nil)
            return [.stopFollowing, .fail(message)]
        case (.interrupted, .row(.failed(_, _, let message))):
            // The object refuses the failure (it never ends here); nothing is followed any more.
            self.phase = .interrupted(following: nil)
            return [.stopFollowing, .fail(message)]
        case (.ended(let outcome, _), .row(.failed(_, _, let message))):
            // The object refuses it: it ended already.
            self.phase = .ended(outcome, following: nil)
            return [.stopFollowing, .fail(message)]

        case (.notBegun, .row(.cancelled)), (.following, .row(.cancelled)), (.started, .row(.cancelled)), (.interrupted, .row(.cancelled)):
            self.phase = .ended(.cancelled, following: nil)
            return [.stopFollowing, .cancel]
        case (.ended(let outcome, _), .row(.cancelled)):
            // Ended already: the cancel is a no-op on it.
            self.phase = .ended(outcome, following: nil)
            return [.stopFollowing, .cancel]

        case (.notBegun, .localCancel), (.following, .localCancel), (.started, .localCancel), (.interrupted, .localCancel):
            // Its readers see `cancelled`; the followed attempt is still
            // remembered (the row's cancel, which follows, forgets it).
            self.phase = .ended(.cancelled, following: self.followed)
            return [.cancel]
        case (.ended, .localCancel):
            return []

        case (.notBegun, .partialFileGone), (.following, .partialFileGone), (.started, .partialFileGone),
            (.interrupted, .partialFileGone), (.ended, .partialFileGone):
            // Renamed into objects/ as it completed, or removed as its attempt
            // stopped: the row says which, and the readers wait for it.
            return []

        case (.notBegun, .shutdown), (.following, .shutdown), (.started, .shutdown):
            self.phase = .interrupted(following: self.followed)
            return [.interrupt(.shutdown)]
        case (.interrupted, .shutdown), (.ended, .shutdown):
            // Stopped or ended already.
            return []

        case (.notBegun, .claimedHere(let attempt)):
            // Not begun: the claim runs this very object, and its readers follow it.
            self.phase = .claimed(attempt: attempt)
            return [.runClaimed(attempt: attempt)]
        case (.following, .claimedHere(let attempt)), (.started, .claimedHere(let attempt)),
            (.interrupted, .claimedHere(let attempt)), (.ended, .claimedHere(let attempt)):
            // It showed another attempt (or ended, or stopped): a new object
            // for this one; the old one's readers abort.
            self.phase = .claimed(attempt: attempt)
            return [.replace(.attemptStopped), .runClaimed(attempt: attempt)]
        }
    }

    /// A running row for an object not claimed here.
    private mutating func running(attempt: Int, here: Bool, leaseExpired: Bool, path: String?) -> [Action] {
        let begun = self.phase != .notBegun
        if leaseExpired {
            // Its gateway stopped renewing: the readers of that attempt
            // abort; another gateway claims it soon.
            guard begun else { return [] }
            self.phase = .notBegun
            return [.replace(.attemptStopped)]
        }
        if self.followed == attempt { return [.recordProgress] }
        // Claimed by this gateway, and its worker not started yet (an
        // admission here): the object is the one it will run, not a mirror.
        if here { return [] }
        guard let path else { return [] }
        self.phase = .following(attempt: attempt)
        return begun ? [.replace(.attemptStopped), .follow(attempt: attempt, path: path)] : [.follow(attempt: attempt, path: path)]
    }

    /// A completed row for an object not claimed here.
    private mutating func completed(attempt: Int, file: PublishedFile?) -> [Action] {
        if case .ended(.completed, _) = self.phase { return [] }
        guard let file else { return [] }
        // Readers of another attempt's partial file may have other bytes:
        // they abort. An object that ended here as cancelled or failed
        // while the run completed (restored from a journal whose only rows
        // of it were cancelled exports: the export that kept it going had
        // been deleted) cannot complete: a new one takes its place, or an
        // export joining the completed run read `cancelled` (seen in a
        // chaos run after a restart). An interrupted one never ends.
        let replace =
            switch self.phase {
            case .following(let followed): followed != attempt
            case .interrupted, .ended: true
            case .notBegun, .started, .absent, .claimed: false
            }
        self.phase = .ended(.completed, following: nil)
        return replace ? [.replace(.attemptStopped), .complete(file)] : [.complete(file)]
    }
}
