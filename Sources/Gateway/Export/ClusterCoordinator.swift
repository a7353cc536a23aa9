import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// What the cluster loops have to do next, as the manager and the listener
/// ask: runs and exports to look up again in the database (a notification
/// named them, or this gateway stopped running one), and whether the shared
/// queue may have work to claim. Its lock guards only these sets.
final class ClusterSignals: Sendable {
    private struct Pending {
        var runs: Set<UUID> = []
        var exports: Set<UUID> = []
        var claim = false
    }

    private let pending = Mutex(Pending())

    /// The claim loop looks at the queue on its next turn.
    func wakeClaims() { self.pending.withLock { $0.claim = true } }

    /// These runs are looked up again on the follow loop's next turn.
    func refreshSoon(_ ids: some Sequence<UUID>) { self.pending.withLock { $0.runs.formUnion(ids) } }

    /// These exports may have been cancelled or deleted elsewhere.
    func recheckSoon(_ ids: some Sequence<UUID>) { self.pending.withLock { $0.exports.formUnion(ids) } }

    func takeClaim() -> Bool {
        self.pending.withLock { pending in
            defer { pending.claim = false }
            return pending.claim
        }
    }

    func takeRuns() -> Set<UUID> {
        self.pending.withLock { pending in
            defer { pending.runs = [] }
            return pending.runs
        }
    }

    func takeExports() -> Set<UUID> {
        self.pending.withLock { pending in
            defer { pending.exports = [] }
            return pending.exports
        }
    }
}

/// This gateway's part in the cluster, as a `Service` (the work itself is
/// the manager's, `ExportManager+Cluster.swift`):
///
/// - the claim loop: claims queued runs while a worker is free, at once when
///   asked (an admission, a worker that ended, `NOTIFY gateway_queue`), else
///   once a second;
/// - the lease loop: renews the leases of the runs claimed here every second;
/// - the follow loop: every 50 ms looks up the runs and exports it was asked
///   to (notifications), once a second every run under way elsewhere, and
///   lets mirrors' readers see what other gateways wrote;
/// - the listener of the database's notifications (`ClusterListener`).
///
/// All of it stops at shutdown.
final class ClusterCoordinator: Service, Sendable {
    private let manager: ExportManager
    private let listener: ClusterListener

    init(manager: ExportManager, settings: PostgresSettings, logger: Logger) {
        self.manager = manager
        self.listener = ClusterListener(settings: settings, logger: logger)
    }

    func run() async throws {
        let manager = self.manager
        self.listener.start {
            manager.noticed($0)
        } reconnected: {
            manager.resync()
        }
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.claimLoop() }
                group.addTask { await self.leaseLoop() }
                group.addTask { await self.followLoop() }
            }
        }
        self.listener.stop()
    }

    private func claimLoop() async {
        var idleTurns = 0
        while (try? await Task.sleep(for: .milliseconds(50))) != nil {
            idleTurns += 1
            guard self.manager.signals.takeClaim() || idleTurns >= 20 else { continue }
            idleTurns = 0
            await self.manager.claimWhileFree()
        }
    }

    private func leaseLoop() async {
        var lastRenewed = ContinuousClock.now
        while (try? await Task.sleep(for: .seconds(1))) != nil {
            if await self.manager.renewLeases(lastRenewed: lastRenewed) { lastRenewed = .now }
        }
    }

    private func followLoop() async {
        var turns = 0
        while (try? await Task.sleep(for: .milliseconds(50))) != nil {
            turns += 1
            var runs = self.manager.signals.takeRuns()
            let exports = self.manager.signals.takeExports()
            // Once a second every mirror still under way, in case a
            // notification was missed or a lease ran out (no one says so).
            if turns % 20 == 0 { runs.formUnion(self.manager.mirrorsUnderWay) }
            if !runs.isEmpty { await self.manager.refresh(Array(runs)) }
            if !exports.isEmpty { await self.manager.recheck(exports: Array(exports)) }
            await self.manager.followPartials()
        }
    }
}
