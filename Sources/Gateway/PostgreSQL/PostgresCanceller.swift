import CLibPQ
import Synchronization

/// Cancels the query running on one connection, from any thread.
///
/// `@unchecked Sendable`: libpq documents `PQcancel` as safe to call from
/// another thread (even a signal handler) on a `PGcancel` object; the lock makes
/// `cancel()` and `deinit`'s `PQfreeCancel` exclusive.
final class PostgresCanceller: @unchecked Sendable {
    private let cancelHandle: OpaquePointer
    private let lock = Mutex(())

    init(_ cancelHandle: OpaquePointer) {
        self.cancelHandle = cancelHandle
    }

    deinit { PQfreeCancel(self.cancelHandle) }

    /// Asks the server to cancel the running query; returns libpq's error text on failure.
    @discardableResult
    func cancel() -> String? {
        self.lock.withLock { _ in
            var errorBuffer = [CChar](repeating: 0, count: 256)
            if PQcancel(self.cancelHandle, &errorBuffer, Int32(errorBuffer.count)) == 1 { return nil }
            return String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
