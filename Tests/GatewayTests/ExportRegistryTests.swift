import Cache
import Foundation
import Testing

@testable import Gateway

/// `ExportRegistry`'s transitions, event by event, with no database, no
/// files and no clock: what each event changes and what it asks the
/// manager to do (runs to interrupt, runs forgotten whose files go).
struct ExportRegistryTests {
    // The empty request (the full export, every default) cannot fail to parse.
    static let request = (try? ExportRequest.parse([]))!
    static let t0 = Date(timeIntervalSince1970: 1_000_000)

    /// A registry that has started and read its journal.
    static func ready() -> ExportRegistry {
        var registry = ExportRegistry()
        registry.markStarted()
        registry.markJournalLoaded()
        return registry
    }

    static func adopt(_ registry: inout ExportRegistry, run: UUID, owner: String? = nil, cancelled: Bool = false) -> ExportJob {
        registry.adopt(exportID: UUID(), owner: owner, createdAt: Self.t0, cancelledAt: cancelled ? Self.t0 : nil, runID: run, request: Self.request)
    }

    static func completedFile() -> PublishedFile {
        PublishedFile(path: "/cache/objects/" + String(repeating: "a", count: 64) + ".csv", size: 10, sha256: String(repeating: "a", count: 64))
    }

    @Test func exportsOfOneRunShareItsObjectAndAnExportIsAdoptedOnce() {
        var registry = Self.ready()
        let runID = UUID()
        let a = Self.adopt(&registry, run: runID)
        let b = Self.adopt(&registry, run: runID, owner: "bob")
        #expect(a.run === b.run)
        #expect(registry.run(runID) === a.run)
        #expect(registry.jobCount == 2)
        let again = registry.adopt(exportID: a.id, owner: nil, createdAt: Self.t0, cancelledAt: nil, runID: runID, request: Self.request)
        #expect(again === a)
        #expect(registry.jobCount == 2)
    }

    @Test func theLastExportToLeaveForgetsItsRunUnlessItIsTheFreshAnswer() {
        var registry = Self.ready()
        let runID = UUID()
        let a = Self.adopt(&registry, run: runID)
        let b = Self.adopt(&registry, run: runID)
        let result1 = registry.leave(a)
        #expect(result1 == nil, "b still needs the run")
        #expect(registry.job(a.id) == nil)
        #expect(registry.knowsRun(runID))
        let result2 = registry.leave(b, keepingFreshRun: true) { _ in true }
        #expect(result2 == nil, "joinable: kept as the fresh answer")
        #expect(registry.knowsRun(runID))

        let other = UUID()
        let c = Self.adopt(&registry, run: other)
        let result3 = registry.leave(c, keepingFreshRun: true) { _ in false }
        #expect(result3 == other, "no longer joinable: forgotten")
        #expect(!registry.knowsRun(other))
        let result4 = registry.leave(c)
        #expect(result4 == nil, "leaving twice changes nothing")
    }

    @Test func aTakenBackExportTakesItsRunEvenWhenANotificationKeptIt() {
        var registry = Self.ready()
        let runID = UUID()
        let job = Self.adopt(&registry, run: runID)
        // The take-back's own notification arrives first: the export goes,
        // the queued run stays as the fresh answer to its request.
        let kept = registry.leave(job, keepingFreshRun: true) { _ in true }
        #expect(kept == nil)
        #expect(registry.knowsRun(runID))
        let forgotten = registry.takeBack(job)
        #expect(forgotten == runID)
        #expect(!registry.knowsRun(runID))
        // Joined meanwhile by another export: the run stays.
        let other = UUID()
        let taken = Self.adopt(&registry, run: other)
        _ = Self.adopt(&registry, run: other)
        let stays = registry.takeBack(taken)
        #expect(stays == nil)
        #expect(registry.knowsRun(other))
    }

    @Test func aCancelledExportNoLongerKeepsItsRun() {
        var registry = Self.ready()
        let runID = UUID()
        let a = Self.adopt(&registry, run: runID)
        let b = Self.adopt(&registry, run: runID, cancelled: true)
        registry.cancelled(a)
        let run = a.run
        _ = run.markRunning(at: Self.t0)
        _ = run.complete(Self.completedFile(), rows: 1, at: Self.t0)
        #expect(registry.evictable(except: nil).map(\.id) == [runID], "no member left: may be evicted")
        #expect(registry.knowsJob(b.id))
        let result5 = registry.runEnded(run, publishedAfterCancel: true)
        #expect(result5 == runID)
        #expect(!registry.knowsRun(runID))
    }

    @Test func workerSlotsOnlyOnceStartedAndReadAndNotStoppingAndWithinTheWorkers() {
        var fresh = ExportRegistry()
        let result6 = fresh.reserveSlot(workers: 2)
        #expect(!result6, "not started")
        fresh.markStarted()
        let result7 = fresh.reserveSlot(workers: 2)
        #expect(!result7, "journal not read")
        fresh.markJournalLoaded()
        let result8 = fresh.reserveSlot(workers: 2)
        #expect(result8)
        let result9 = fresh.reserveSlot(workers: 2)
        #expect(result9)
        let result10 = fresh.reserveSlot(workers: 2)
        #expect(!result10, "both slots promised")
        fresh.releaseSlot()
        let result11 = fresh.reserveSlot(workers: 2)
        #expect(result11)
        // A claim takes its reserved slot: claims + reserved stay at two.
        _ = fresh.claimed(UUID(), attempt: 1, request: Self.request)
        let result12 = fresh.reserveSlot(workers: 2)
        #expect(!result12)
        let result13 = fresh.beginShutdown()
        #expect(result13.count == 1, "the claimed run, queued, is interrupted")
        fresh.releaseSlot()
        let result14 = fresh.reserveSlot(workers: 2)
        #expect(!result14, "stopping")
        let result15 = fresh.beginShutdown()
        #expect(result15.isEmpty, "the second shutdown interrupts nothing")
    }

    @Test func aClaimRunsOnTheKeptObjectOnlyIfItHasNotBegun() {
        var registry = Self.ready()
        let runID = UUID()
        let job = Self.adopt(&registry, run: runID)
        let queued = job.run
        _ = registry.reserveSlot(workers: 4)
        let first = registry.claimed(runID, attempt: 1, request: Self.request)
        #expect(first.run === queued)
        #expect(first.replaced?.run == nil)
        #expect(registry.claim(of: runID)?.attempt == 1)
        #expect(registry.mirrorsUnderWay.isEmpty, "claimed here: not a mirror")

        // Claimed again (a lease lost and won back): a new object for the new
        // attempt, the exports follow it, the old one is to be interrupted.
        let second = registry.claimed(runID, attempt: 2, request: Self.request)
        #expect(second.run !== queued)
        #expect(second.replaced?.run === queued)
        #expect(registry.job(job.id)?.run === second.run)
        #expect(registry.claim(of: runID)?.attempt == 2)

        // The first attempt's worker ends: the second's claim stays.
        let result16 = registry.runEnded(queued, publishedAfterCancel: false)
        #expect(result16 == nil)
        #expect(registry.claim(of: runID)?.run === second.run)
        let result17 = registry.runEnded(second.run, publishedAfterCancel: false)
        #expect(result17 == nil)
        #expect(registry.claim(of: runID) == nil)
    }

    @Test func aClaimOfAFollowedOrInterruptedRunTakesANewObject() {
        var registry = Self.ready()
        let followedID = UUID()
        let followed = Self.adopt(&registry, run: followedID).run
        registry.follow(followed, attempt: 1, path: "/cache/partial/x")
        #expect(registry.following(followedID)?.attempt == 1)
        #expect(registry.followedPartials.map(\.path) == ["/cache/partial/x"])
        let taken = registry.claimed(followedID, attempt: 2, request: Self.request)
        #expect(taken.replaced?.run === followed)
        #expect(registry.following(followedID) == nil)

        let interruptedID = UUID()
        let interrupted = Self.adopt(&registry, run: interruptedID).run
        _ = interrupted.interrupt()
        let result18 = registry.claimed(interruptedID, attempt: 1, request: Self.request)
        #expect(result18.replaced?.run === interrupted)

        let unknown = UUID()
        let new = registry.claimed(unknown, attempt: 1, request: Self.request)
        #expect(new.replaced?.run == nil)
        #expect(registry.run(unknown) === new.run)
    }

    @Test func aReplacementOfAnObjectNoLongerKeptChangesNothing() {
        var registry = Self.ready()
        let runID = UUID()
        let job = Self.adopt(&registry, run: runID)
        let old = job.run
        let new = ExportRun(id: runID, request: Self.request)
        let result19 = registry.replacing(old, with: new)
        #expect(result19 == nil)
        #expect(registry.job(job.id)?.run === new)
        let newer = ExportRun(id: runID, request: Self.request)
        let result20 = registry.replacing(old, with: newer)
        #expect(result20 === new, "the kept one comes back")
        #expect(registry.run(runID) === new)
        let result21 = registry.mirrorCompleted(old)
        #expect(!result21)
        registry.follow(new, attempt: 3, path: "/p")
        let result22 = registry.mirrorCompleted(new)
        #expect(result22)
        #expect(registry.following(runID) == nil)
    }

    @Test func staleRunsAreMirrorsAndEndedRunsNoLongerJoinableThatNoExportOrClaimNeeds() {
        var registry = Self.ready()
        let needed = Self.adopt(&registry, run: UUID())
        let mirrorJob = Self.adopt(&registry, run: UUID())
        let result23 = registry.leave(mirrorJob, keepingFreshRun: true) { _ in true }
        #expect(result23 == nil)
        let fresh = Self.adopt(&registry, run: UUID())
        _ = fresh.run.markRunning(at: Self.t0)
        _ = fresh.run.complete(Self.completedFile(), rows: 1, at: Self.t0)
        let result24 = registry.leave(fresh, keepingFreshRun: true) { _ in true }
        #expect(result24 == nil)
        let claimedID = UUID()
        _ = registry.claimed(claimedID, attempt: 1, request: Self.request)

        let forgotten = registry.forgetStaleRuns { $0 === fresh.run }
        #expect(forgotten == [mirrorJob.run.id], "the queued mirror goes; the needed, the claimed and the fresh stay")
        #expect(registry.knowsRun(needed.run.id) && registry.knowsRun(claimedID) && registry.knowsRun(fresh.run.id))
        let result25 = registry.forgetStaleRuns { _ in false }
        #expect(result25 == [fresh.run.id], "past CACHE_TTL")
    }

    @Test func anExpiredExportIsRememberedForItsTTLThenForgotten() {
        var registry = Self.ready()
        let job = Self.adopt(&registry, run: UUID(), owner: "alice")
        #expect(registry.jobs(olderThan: 10, now: Self.t0.addingTimeInterval(9)).isEmpty)
        #expect(registry.jobs(olderThan: 10, now: Self.t0.addingTimeInterval(10)).map(\.id) == [job.id])
        let result26 = registry.expire(job, at: Self.t0.addingTimeInterval(10), evicted: true)
        #expect(result26 == job.run.id)
        #expect(registry.expiredExport(job.id)?.owner == "alice")
        #expect(registry.expiredExport(job.id)?.evicted == true)
        let result27 = registry.expire(job, at: Self.t0, evicted: false)
        #expect(result27 == nil, "once")
        registry.forgetExpired(olderThan: 10, now: Self.t0.addingTimeInterval(19))
        #expect(registry.expiredExport(job.id) != nil)
        registry.forgetExpired(olderThan: 10, now: Self.t0.addingTimeInterval(20))
        #expect(registry.expiredExport(job.id) == nil)
    }

    @Test func evictionNeverNamesARunThatIsNeededOrWritingOrUnfinished() {
        var registry = Self.ready()
        func completed(_ job: ExportJob) {
            _ = job.run.markRunning(at: Self.t0)
            _ = job.run.complete(Self.completedFile(), rows: 1, at: Self.t0)
        }
        let needed = Self.adopt(&registry, run: UUID())
        completed(needed)
        let loose = Self.adopt(&registry, run: UUID())
        completed(loose)
        _ = registry.leave(loose, keepingFreshRun: true) { _ in true }
        let running = Self.adopt(&registry, run: UUID())
        _ = running.run.markRunning(at: Self.t0)
        _ = registry.leave(running, keepingFreshRun: true) { _ in true }
        #expect(registry.evictable(except: nil).map(\.id) == [loose.run.id])
        #expect(registry.evictable(except: loose.run).isEmpty)
        registry.evicted([loose.run.id])
        #expect(!registry.knowsRun(loose.run.id))
        let view = registry.roomView(excluding: needed.run.id)
        #expect(view.runs.map(\.id) == [running.run.id])
        #expect(view.owners[needed.run.id] == [""])
    }

    @Test func aFailedOrStoppedClaimOfTheSameRequestIsNotJoined() {
        var registry = Self.ready()
        let claimed = registry.claimed(UUID(), attempt: 1, request: Self.request).run
        #expect(!registry.hasDoomedClaim(key: Self.request.cacheKey))
        _ = claimed.interrupt()
        #expect(registry.hasDoomedClaim(key: Self.request.cacheKey))
    }

    @Test func aRestoredRunIsAddedOnce() {
        var registry = ExportRegistry()
        let run = ExportRun(id: UUID(), request: Self.request)
        let job = ExportJob(id: UUID(), run: run, owner: nil, createdAt: Self.t0)
        let result28 = registry.restore(run, members: [job.id], jobs: [job])
        #expect(result28)
        let result29 = registry.restore(ExportRun(id: run.id, request: Self.request), members: [], jobs: [])
        #expect(!result29)
        #expect(registry.run(run.id) === run)
        #expect(registry.job(job.id) === job)
        let result30 = registry.leave(job)
        #expect(result30 == run.id)
    }
}
