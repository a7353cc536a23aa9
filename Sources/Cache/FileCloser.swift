import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Closes file descriptors on a thread pool. Closing the last descriptor of a
/// file that was deleted while open frees its blocks in that very call, which
/// for a gigabyte file takes long enough to stall an event loop or the
/// cooperative pool; so no descriptor of a cache file is closed there.
public struct FileCloser: Sendable {
    let threadPool: NIOThreadPool

    public init(threadPool: NIOThreadPool) {
        self.threadPool = threadPool
    }

    /// Closes `descriptor` on the pool, then calls `then` (on the pool thread).
    /// Does not wait. A pool that has stopped runs it on the caller's thread.
    public func close(_ descriptor: Int32, then: (@Sendable () -> Void)? = nil) {
        self.threadPool.submit { _ in
            _ = Glibc.close(descriptor)
            then?()
        }
    }
}
