import Dispatch
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The thread pools for blocking work, one per kind, so that one kind
/// stalling never stalls another: a database that does not answer holds up
/// journal writes, not downloads; a burst of gzip holds up compression, not
/// reads; deleting a gigabyte file holds up other deletions, not reads.
/// (Exports run on threads of their own, `ExportManager`'s workers.)
///
/// A `Service` only so that its threads stop with the application, after
/// the server and the manager (it is first in the service group).
final class BlockingPools: Service, Sendable {
    /// Reads of cache files for downloads, and their opens.
    let downloads: NIOThreadPool
    /// Journal statements, `malloc_trim`.
    let database: NIOThreadPool
    /// One thread: every rename into and deletion from `objects/`, in order
    /// (see `ExportManager+Cache.swift`), each in its journal transaction.
    let files: NIOThreadPool
    /// The closing of downloaded cache files (the last close of a deleted
    /// file frees its blocks, which takes a while for a large one): never
    /// queued behind a publish's or a deletion's journal transaction, so a
    /// closed file's bytes stop counting in the cache at once.
    let closes: NIOThreadPool
    /// Gzip compression.
    let compression: NIOThreadPool
    /// Health probes: never queued behind journal statements or deletions.
    let probes: NIOThreadPool
    /// Query cancels (`PQcancel`, which has no timeout of its own: a server
    /// that stopped answering holds it), kept apart from the journal.
    let cancels: NIOThreadPool

    init(downloadThreads: Int = 4, databaseThreads: Int = 4, compressionThreads: Int = 1) {
        self.downloads = NIOThreadPool(numberOfThreads: max(1, downloadThreads))
        self.database = NIOThreadPool(numberOfThreads: max(1, databaseThreads))
        self.files = NIOThreadPool(numberOfThreads: 1)
        self.closes = NIOThreadPool(numberOfThreads: 1)
        self.compression = NIOThreadPool(numberOfThreads: max(1, compressionThreads))
        self.probes = NIOThreadPool(numberOfThreads: 2)
        self.cancels = NIOThreadPool(numberOfThreads: 2)
        for pool in self.all { pool.start() }
    }

    private var all: [NIOThreadPool] { [self.downloads, self.database, self.files, self.closes, self.compression, self.probes, self.cancels] }

    func run() async throws {
        // Returns on graceful shutdown, throws when cancelled: both end it.
        try? await gracefulShutdown()
        await self.shutdown()
    }

    /// Stops every pool: queued work is told it was cancelled, running work
    /// ends on its own. Not awaited: a thread stuck in a database call that
    /// nothing can interrupt must not hold the shutdown.
    func shutdown() async {
        for pool in self.all { pool.shutdownGracefully { _ in } }
    }
}

extension NIOThreadPool {
    /// Runs `body` on the pool and blocks the calling thread until it is
    /// done. Only for threads that may block (the export workers): never
    /// from an event loop or the cooperative pool.
    func runAndWait<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<T, any Error>?>(nil)
        self.submit { state in
            let outcome: Result<T, any Error> = state == .active ? Result { try body() } : .failure(CancellationError())
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        guard let outcome = result.withLock({ $0 }) else { throw CancellationError() }
        return try outcome.get()
    }
}
