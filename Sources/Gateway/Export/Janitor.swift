import Cache
import Foundation
import Logging
import ServiceLifecycle

/// The janitor, as a `Service` that ends at shutdown. Each round:
///
/// - exports past EXPORT_TTL expire (410; their files go when no other
///   export needs them), and runs no export here needs are dropped once
///   CACHE_TTL has passed (`ExportManager+Expiry.swift`: the registry's
///   part), and the cache is brought back under CACHE_MAX_BYTES;
/// - kept export connections idle for a minute are closed;
/// - the journal forgets exports expired for EXPORT_TTL and ended runs no
///   export refers to past CACHE_TTL;
/// - files in `objects/` that no export anywhere refers to go;
/// - the partial files of gateways that stopped for good (no lease, nothing
///   written for two leases) go.
final class Janitor: Service, Sendable {
    private let manager: ExportManager

    init(manager: ExportManager) {
        self.manager = manager
    }

    /// How often a round runs: a quarter of the shorter TTL, 1 to 60 s.
    var interval: Duration {
        .seconds(max(1, min(60, min(self.manager.exportTTL, self.manager.cacheTTL) / 4)))
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while (try? await Task.sleep(for: self.interval)) != nil {
                await self.round()
            }
        }
    }

    func round() async {
        let manager = self.manager
        await manager.expireOld()
        manager.forgetStaleRuns()
        // Kept export connections idle for a minute go (a blocking close: off this pool).
        try? await manager.onDatabasePool { $0.workers.closeStaleConnections() }
        let keep = Int(manager.exportTTL)
        let cacheTTL = Int(manager.cacheTTL)
        try? await manager.onDatabasePool { manager in
            try manager.journal.forgetExpired(after: keep)
            try manager.journal.forgetRuns(olderThan: cacheTTL)
        }
        try? await manager.onFilesPool { _ in self.removeUnreferencedObjects() }
        await self.removeDeadGatewaysPartials()
    }

    /// Files in `objects/` that no run here holds and no export anywhere
    /// refers to go: a deletion that was skipped while an export still
    /// referred to the file (or while the database did not answer) is made
    /// here once none does. On the files thread, in order with publishing.
    private func removeUnreferencedObjects() {
        let manager = self.manager
        let directory = manager.store.objectsDirectory
        let unheld = manager.store.objectNames().filter { !manager.cache.isHeld(directory + "/" + $0) }
        let hashes = unheld.map { String($0.prefix(64)) }.filter(Hex.isSHA256)
        guard let candidates = try? manager.journal.unreferenced(Array(Set(hashes))), !candidates.isEmpty else { return }
        for name in unheld where candidates.contains(String(name.prefix(64))) {
            manager.removeUnreferenced(directory + "/" + name)
        }
    }

    /// Another gateway's partial folder holds files only while it runs
    /// exports under a lease. With no lease, a file not written for two
    /// leases is debris of a gateway that was killed and not started again
    /// (one started again removes its own at start). The leases are looked
    /// up before the folder is: a file made after that is new, and stays.
    private func removeDeadGatewaysPartials() async {
        let manager = self.manager
        guard let live = try? await manager.onDatabasePool({ try $0.journal.liveInstances() }) else { return }
        let liveFolders = Set(live.map(ContentStore.partialFolderName(of:)))
        let age = TimeInterval(2 * manager.cluster.leaseSeconds)
        let removed = try? await manager.onFilesPool { manager in
            manager.store.otherPartialFolders().filter { !liveFolders.contains($0) }.reduce(0) { $0 + manager.store.removeStalePartials(in: $1, olderThan: age) }
        }
        if let removed, removed > 0 {
            manager.logger.notice("removed partial files of gateways that stopped", metadata: [LogKey.cacheRemoved: "\(removed)"])
        }
    }
}
