import Cache
import Foundation
import Testing

@testable import Gateway

/// `MirrorState`: every event in every state, the decisions of the manager
/// before the machine existed (transcribed below) over every combination of
/// what it looked at, and the cluster tests' stories as event sequences.
struct MirrorStateTests {
    typealias Phase = MirrorState.Phase
    typealias Event = MirrorState.Event
    typealias Action = MirrorState.Action

    static let path = "/cache/partial/b/run-1.csv.partial"
    static let file = PublishedFile(path: "/cache/objects/abc.csv", size: 10, sha256: "abc")
    static let replace = Action.replace(.attemptStopped)
    static let lost = Action.interruptClaimed(.anotherGatewayRuns)

    static func running(_ attempt: Int, here: Bool = false, expired: Bool = false, path: String? = Self.path) -> Event {
        .row(.running(attempt: attempt, here: here, leaseExpired: expired, partialPath: path))
    }

    static func completed(_ attempt: Int, here: Bool = false, file: PublishedFile? = Self.file) -> Event {
        .row(.completed(attempt: attempt, here: here, file: file))
    }

    static func failed(_ attempt: Int, here: Bool = false) -> Event {
        .row(.failed(attempt: attempt, here: here, message: "boom"))
    }

    /// The events every state is walked with (attempt 3 is the one followed
    /// or claimed in the states that have one; 4 is another).
    static let events: [(String, Event)] = [
        ("queued", .row(.queued)),
        ("running 3 elsewhere", running(3)),
        ("running 4 elsewhere", running(4)),
        ("running 4 here", running(4, here: true)),
        ("running 4 without a partial file", running(4, path: nil)),
        ("running 4 past its lease", running(4, expired: true)),
        ("running 3 here", running(3, here: true)),
        ("running 3 here past its lease", running(3, here: true, expired: true)),
        ("completed 3 elsewhere", completed(3)),
        ("completed 4 elsewhere", completed(4)),
        ("completed 4 without hash or size", completed(4, file: nil)),
        ("completed 3 here", completed(3, here: true)),
        ("failed 3 here", failed(3, here: true)),
        ("failed 4 elsewhere", failed(4)),
        ("cancelled", .row(.cancelled)),
        ("local cancel", .localCancel),
        ("partial file gone", .partialFileGone),
        ("shutdown", .shutdown),
        ("claimed here at 4", .claimedHere(attempt: 4)),
    ]

    /// One state against every event of `events`, in that order.
    func walk(_ start: Phase, _ expected: [(Phase, [Action])], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(expected.count == Self.events.count, "one expectation per event", sourceLocation: sourceLocation)
        for ((name, event), (next, actions)) in zip(Self.events, expected) {
            var machine = MirrorState(start)
            let got = machine.handle(event)
            #expect(got == actions, "\(start) + \(name): actions", sourceLocation: sourceLocation)
            #expect(machine.phase == next, "\(start) + \(name): next state", sourceLocation: sourceLocation)
        }
    }

    // MARK: Every event in every state

    @Test func absent() {
        let nothing = (Phase.absent, [Action]())
        self.walk(.absent, Array(repeating: nothing, count: 18) + [(.claimed(attempt: 4), [.keepNew, .runClaimed(attempt: 4)])])
    }

    @Test func notBegun() {
        let same = (Phase.notBegun, [Action]())
        self.walk(
            .notBegun,
            [
                same,
                (.following(attempt: 3), [.follow(attempt: 3, path: Self.path)]),
                (.following(attempt: 4), [.follow(attempt: 4, path: Self.path)]),
                same,
                same,
                same,
                same,
                same,
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                (.ended(.cancelled, following: nil), [.cancel]),
                same,
                (.interrupted(following: nil), [.interrupt(.shutdown)]),
                (.claimed(attempt: 4), [.runClaimed(attempt: 4)]),
            ])
    }

    @Test func following() {
        let same = (Phase.following(attempt: 3), [Action]())
        self.walk(
            .following(attempt: 3),
            [
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [.recordProgress]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [.recordProgress]),
                (.notBegun, [Self.replace]),
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                (.ended(.cancelled, following: 3), [.cancel]),
                same,
                (.interrupted(following: 3), [.interrupt(.shutdown)]),
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func started() {
        let same = (Phase.started, [Action]())
        self.walk(
            .started,
            [
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [Self.replace, .follow(attempt: 3, path: Self.path)]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                same,
                (.notBegun, [Self.replace]),
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [.complete(Self.file)]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.failed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                (.ended(.cancelled, following: nil), [.cancel]),
                same,
                (.interrupted(following: nil), [.interrupt(.shutdown)]),
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func claimed() {
        let ownRow = (Phase.claimed(attempt: 3), [Action]())
        let lost = (Phase.claimed(attempt: 3), [Self.lost])
        self.walk(
            .claimed(attempt: 3),
            [
                lost,
                lost,
                lost,
                lost,
                lost,
                lost,
                ownRow,
                ownRow,
                lost,
                lost,
                lost,
                ownRow,
                ownRow,
                lost,
                (.claimed(attempt: 3), [.cancelClaimed]),
                (.claimed(attempt: 3), [.cancelClaimed]),
                ownRow,
                (.claimed(attempt: 3), [.interruptClaimed(.shutdown)]),
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func interrupted() {
        let same = (Phase.interrupted(following: nil), [Action]())
        self.walk(
            .interrupted(following: nil),
            [
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [Self.replace, .follow(attempt: 3, path: Self.path)]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                same,
                (.notBegun, [Self.replace]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.interrupted(following: nil), [.stopFollowing, .fail("boom")]),
                (.interrupted(following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                (.ended(.cancelled, following: nil), [.cancel]),
                same,
                same,
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func interruptedWhileFollowing() {
        let same = (Phase.interrupted(following: 3), [Action]())
        self.walk(
            .interrupted(following: 3),
            [
                (.notBegun, [Self.replace]),
                (.interrupted(following: 3), [.recordProgress]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                (.interrupted(following: 3), [.recordProgress]),
                (.notBegun, [Self.replace]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.interrupted(following: nil), [.stopFollowing, .fail("boom")]),
                (.interrupted(following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                (.ended(.cancelled, following: 3), [.cancel]),
                same,
                same,
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func endedCompleted() {
        let same = (Phase.ended(.completed, following: nil), [Action]())
        self.walk(
            .ended(.completed, following: nil),
            [
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [Self.replace, .follow(attempt: 3, path: Self.path)]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                same,
                (.notBegun, [Self.replace]),
                same,
                same,
                same,
                same,
                (.ended(.completed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.completed, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.completed, following: nil), [.stopFollowing, .cancel]),
                same,
                same,
                same,
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test(arguments: [MirrorState.Outcome.failed, .cancelled])
    func endedFailedOrCancelled(outcome: MirrorState.Outcome) {
        let same = (Phase.ended(outcome, following: nil), [Action]())
        self.walk(
            .ended(outcome, following: nil),
            [
                (.notBegun, [Self.replace]),
                (.following(attempt: 3), [Self.replace, .follow(attempt: 3, path: Self.path)]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                same,
                (.notBegun, [Self.replace]),
                // The fix of 7cfef5e: a completed run never shows `cancelled` or `failed` here.
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(outcome, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(outcome, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(outcome, following: nil), [.stopFollowing, .cancel]),
                same,
                same,
                same,
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    @Test func endedWhileFollowing() {
        // A local cancel of a followed run: the row's cancel comes next.
        let same = (Phase.ended(.cancelled, following: 3), [Action]())
        self.walk(
            .ended(.cancelled, following: 3),
            [
                (.notBegun, [Self.replace]),
                (.ended(.cancelled, following: 3), [.recordProgress]),
                (.following(attempt: 4), [Self.replace, .follow(attempt: 4, path: Self.path)]),
                same,
                same,
                (.notBegun, [Self.replace]),
                (.ended(.cancelled, following: 3), [.recordProgress]),
                (.notBegun, [Self.replace]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                same,
                (.ended(.completed, following: nil), [Self.replace, .complete(Self.file)]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .fail("boom")]),
                (.ended(.cancelled, following: nil), [.stopFollowing, .cancel]),
                same,
                same,
                same,
                (.claimed(attempt: 4), [Self.replace, .runClaimed(attempt: 4)]),
            ])
    }

    // MARK: What the manager holds, as a state

    @Test func theStateComesFromTheObjectTheFollowedAttemptAndTheClaim() {
        #expect(MirrorState(status: nil, interrupted: false, following: nil, claimed: nil).phase == .absent)
        #expect(MirrorState(status: nil, interrupted: false, following: nil, claimed: 2).phase == .claimed(attempt: 2))
        #expect(MirrorState(status: .queued, interrupted: false, following: nil, claimed: nil).phase == .notBegun)
        #expect(MirrorState(status: .queued, interrupted: false, following: nil, claimed: 2).phase == .claimed(attempt: 2))
        #expect(MirrorState(status: .queued, interrupted: true, following: nil, claimed: nil).phase == .interrupted(following: nil))
        #expect(MirrorState(status: .running, interrupted: false, following: 2, claimed: nil).phase == .following(attempt: 2))
        #expect(MirrorState(status: .running, interrupted: false, following: nil, claimed: nil).phase == .started)
        #expect(MirrorState(status: .running, interrupted: true, following: 2, claimed: nil).phase == .interrupted(following: 2))
        #expect(MirrorState(status: .completed, interrupted: false, following: nil, claimed: nil).phase == .ended(.completed, following: nil))
        #expect(MirrorState(status: .cancelled, interrupted: true, following: 2, claimed: nil).phase == .ended(.cancelled, following: 2))
        #expect(MirrorState(status: .failed, interrupted: false, following: nil, claimed: 5).phase == .claimed(attempt: 5))
    }

    // MARK: The same decisions as before the machine

    /// `reconcile`/`mirror` and `startClaimed` as they were (commit c07bc91),
    /// over what they looked at, written with the machine's actions.
    /// (A local cancel and a shutdown are `ExportManager.swift`'s; a partial
    /// file gone was, and is, no event to `followPartials`.)
    static func before(status: ExportLifecycle.Status?, interrupted: Bool, followed: Int?, claim: Int?, event: Event) -> [Action] {
        if case .claimedHere(let attempt) = event {
            guard let status else { return [.keepNew, .runClaimed(attempt: attempt)] }
            let reuse = status == .queued && !interrupted && followed == nil && claim == nil
            return reuse ? [.runClaimed(attempt: attempt)] : [Self.replace, .runClaimed(attempt: attempt)]
        }
        guard case .row(let row) = event else { return [] }
        if let claim {
            switch row {
            case .running(let attempt, let here, _, _), .completed(let attempt, let here, _), .failed(let attempt, let here, _):
                if here, attempt == claim { return [] }
            case .queued, .cancelled:
                break
            }
            return row == .cancelled ? [.cancelClaimed] : [Self.lost]
        }
        guard let status else { return [] }
        let begun = followed != nil || status != .queued || interrupted
        switch row {
        case .queued:
            return begun ? [Self.replace] : []
        case .running(let attempt, let here, let leaseExpired, let path):
            if leaseExpired { return begun ? [Self.replace] : [] }
            if followed == attempt { return [.recordProgress] }
            if here { return [] }
            guard let path else { return [] }
            return (begun ? [Self.replace] : []) + [.follow(attempt: attempt, path: path)]
        case .completed(let attempt, _, let file):
            guard status != .completed, let file else { return [] }
            let ended = status == .cancelled || status == .failed
            let replace = (followed.map { $0 != attempt } ?? false) || interrupted || ended
            return (replace ? [Self.replace] : []) + [.complete(file)]
        case .failed(_, _, let message):
            return [.stopFollowing, .fail(message)]
        case .cancelled:
            return [.stopFollowing, .cancel]
        }
    }

    @Test func everyRowAndClaimIsDecidedAsBefore() {
        var compared = 0
        let statuses: [ExportLifecycle.Status?] = [nil] + ExportLifecycle.Status.allCases.map { $0 }
        for status in statuses {
            for interrupted in [false, true] {
                for followed in [nil, 3] {
                    for claim in [nil, 3] {
                        // Rows and claims: the events the manager handled here before.
                        for (name, event) in Self.events where event != .localCancel && event != .shutdown && event != .partialFileGone {
                            var machine = MirrorState(status: status, interrupted: interrupted, following: followed, claimed: claim)
                            let start = machine.phase
                            var got = machine.handle(event)
                            // A claim of a run claimed here whose object is gone:
                            // the manager puts the new object in either way.
                            if status == nil, claim != nil, got.first == Self.replace { got[0] = .keepNew }
                            let want = Self.before(status: status, interrupted: interrupted, followed: followed, claim: claim, event: event)
                            #expect(
                                got == want, "\(String(describing: status)) interrupted \(interrupted) followed \(String(describing: followed)) claim \(String(describing: claim)) (\(start)) + \(name)"
                            )
                            compared += 1
                        }
                    }
                }
            }
        }
        #expect(compared == 6 * 2 * 2 * 2 * (Self.events.count - 3))
    }

    // MARK: The cluster tests' stories

    /// Runs `steps` from `start`; each step's actions and the state after it.
    func replay(_ start: Phase, _ steps: [(Event, [Action], Phase)], sourceLocation: SourceLocation = #_sourceLocation) {
        var machine = MirrorState(start)
        for (index, (event, actions, next)) in steps.enumerated() {
            let got = machine.handle(event)
            #expect(got == actions, "step \(index + 1): \(event)", sourceLocation: sourceLocation)
            #expect(machine.phase == next, "step \(index + 1): \(event)", sourceLocation: sourceLocation)
        }
    }

    /// `killDashNineOfTheRunningGatewayAnotherFinishesTheExportUnderItsId`:
    /// b runs attempt 1 and is killed; its lease runs out; c runs attempt 2.
    @Test func takeoverAfterAKill() {
        let second = "/cache/partial/c/run-2.csv.partial"
        self.replay(
            .notBegun,
            [
                (Self.running(1), [.follow(attempt: 1, path: Self.path)], .following(attempt: 1)),
                (Self.running(1), [.recordProgress], .following(attempt: 1)),
                // The readers of attempt 1 abort; a fresh object waits for attempt 2.
                (Self.running(1, expired: true), [Self.replace], .notBegun),
                (Self.running(1, expired: true), [], .notBegun),
                (Self.running(2, path: second), [.follow(attempt: 2, path: second)], .following(attempt: 2)),
                (Self.completed(2), [.complete(Self.file)], .ended(.completed, following: nil)),
                (Self.completed(2), [], .ended(.completed, following: nil)),
            ])
        // The expired row missed (a refresh a second later sees attempt 2 already).
        self.replay(
            .following(attempt: 1),
            [
                (Self.running(2, path: second), [Self.replace, .follow(attempt: 2, path: second)], .following(attempt: 2))
            ])
        // This gateway is the one that takes it over.
        self.replay(
            .following(attempt: 1),
            [
                (Self.running(1, expired: true), [Self.replace], .notBegun),
                (.claimedHere(attempt: 2), [.runClaimed(attempt: 2)], .claimed(attempt: 2)),
                (Self.running(2, here: true), [], .claimed(attempt: 2)),
                (Self.completed(2, here: true), [], .claimed(attempt: 2)),
            ])
        // ...or it had the claim and lost it to c while cut off.
        self.replay(
            .claimed(attempt: 1),
            [
                (Self.running(2), [Self.lost], .claimed(attempt: 1))
            ])
    }

    /// `aDeleteRacingALookUpOnAnotherGatewayStaysDeleted` and
    /// `deleteOnOneGatewayCancelsTheQueryRunningOnAnother`.
    @Test func deleteRacingALookUp() {
        // The look-up adopted the run (queued); the delete's cancel arrives.
        self.replay(
            .absent,
            [
                (.row(.cancelled), [], .absent)
            ])
        self.replay(
            .notBegun,
            [
                (.row(.cancelled), [.stopFollowing, .cancel], .ended(.cancelled, following: nil)),
                (.row(.cancelled), [.stopFollowing, .cancel], .ended(.cancelled, following: nil)),
                (.localCancel, [], .ended(.cancelled, following: nil)),
            ])
        // Followed here, deleted here: the local cancel, then the row's.
        self.replay(
            .following(attempt: 1),
            [
                (.localCancel, [.cancel], .ended(.cancelled, following: 1)),
                (Self.running(1), [.recordProgress], .ended(.cancelled, following: 1)),
                (.row(.cancelled), [.stopFollowing, .cancel], .ended(.cancelled, following: nil)),
            ])
        // Deleted on another gateway while this one runs it: the query stops.
        self.replay(
            .claimed(attempt: 1),
            [
                (.row(.cancelled), [.cancelClaimed], .claimed(attempt: 1))
            ])
    }

    /// `restartOfOneGatewayLosesNothingOfTheOthers`: b, which ran attempt 1,
    /// restarts; its restore queues the run again, and it runs attempt 2.
    @Test func restartOfAPeer() {
        let second = "/cache/partial/b/run-2.csv.partial"
        self.replay(
            .following(attempt: 1),
            [
                (.row(.queued), [Self.replace], .notBegun),
                (.row(.queued), [], .notBegun),
                (Self.running(2, path: second), [.follow(attempt: 2, path: second)], .following(attempt: 2)),
                (.partialFileGone, [], .following(attempt: 2)),
                (Self.completed(2), [.complete(Self.file)], .ended(.completed, following: nil)),
            ])
        // This gateway restarted: its runs come back queued and follow again.
        self.replay(
            .notBegun,
            [
                (Self.running(2, path: second), [.follow(attempt: 2, path: second)], .following(attempt: 2))
            ])
    }

    /// `sigtermHandsTheRunningExportToAnotherGatewayAtOnce`: b, on SIGTERM,
    /// hands attempt 1 back (queued); c runs attempt 2 at once.
    @Test func sigtermHandBack() {
        let second = "/cache/partial/c/run-2.csv.partial"
        // On a third gateway, following.
        self.replay(
            .following(attempt: 1),
            [
                (.row(.queued), [Self.replace], .notBegun),
                (Self.running(2, path: second), [.follow(attempt: 2, path: second)], .following(attempt: 2)),
                (Self.completed(2), [.complete(Self.file)], .ended(.completed, following: nil)),
            ])
        // The queued row missed: running at 2 straight after 1.
        self.replay(
            .following(attempt: 1),
            [
                (Self.running(2, path: second), [Self.replace, .follow(attempt: 2, path: second)], .following(attempt: 2))
            ])
        // On b itself: the shutdown stops the worker, which hands it back.
        self.replay(
            .claimed(attempt: 1),
            [
                (.shutdown, [.interruptClaimed(.shutdown)], .claimed(attempt: 1))
            ])
        self.replay(
            .interrupted(following: nil),
            [
                (.row(.queued), [Self.replace], .notBegun),
                (.shutdown, [.interrupt(.shutdown)], .interrupted(following: nil)),
            ])
    }

    /// `anExportJoiningACompletedRunRestoredFromCancelledRowsIsCompleted`
    /// (7cfef5e): restored as cancelled (or failed), the run completed.
    @Test func aCompletedRowAfterARestoredCancelOrFailure() {
        for outcome in [MirrorState.Outcome.cancelled, .failed] {
            self.replay(
                .ended(outcome, following: nil),
                [
                    (Self.completed(1, file: nil), [], .ended(outcome, following: nil)),
                    (Self.completed(1), [Self.replace, .complete(Self.file)], .ended(.completed, following: nil)),
                    (Self.completed(1), [], .ended(.completed, following: nil)),
                ])
        }
        self.replay(
            .notBegun,
            [
                (.localCancel, [.cancel], .ended(.cancelled, following: nil)),
                (Self.completed(1), [Self.replace, .complete(Self.file)], .ended(.completed, following: nil)),
            ])
    }
}
