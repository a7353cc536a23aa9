#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error of the content store. `description` is safe to show a client; the
/// errno and path go to the log through `details`.
public struct CacheError: Error, CustomStringConvertible, Sendable {
    private enum Code: Sendable {
        case diskFull
        case cacheFull
        case io
        case failed
        case cancelled
    }

    private let code: Code
    /// What the operating system said, for the log only.
    public let details: String

    public var description: String {
        switch self.code {
        case .diskFull: "the export cache is out of disk space"
        case .cacheFull: "the export cache is full (CACHE_MAX_BYTES) and nothing in it can be evicted"
        case .io: "the export cache could not be written"
        case .failed: "the export failed"
        case .cancelled: "the export was cancelled"
        }
    }

    public var isDiskFull: Bool { self.code == .diskFull || self.code == .cacheFull }
    public var isCancelled: Bool { self.code == .cancelled }

    /// A failed system call: ENOSPC and EDQUOT become `diskFull`, the rest `io`.
    static func system(_ call: String, path: String, errno err: Int32) -> CacheError {
        let code: Code = (err == ENOSPC || err == EDQUOT) ? .diskFull : .io
        return CacheError(code: code, details: "\(call)(\(path)): \(String(cString: strerror(err)))")
    }

    /// The producer of a growing file gave up; `details` is the reason it gave.
    public static func failed(_ details: String) -> CacheError { CacheError(code: .failed, details: details) }
    /// The cache's byte budget is spent and nothing can be evicted.
    public static func cacheFull() -> CacheError { CacheError(code: .cacheFull, details: "over CACHE_MAX_BYTES") }
    public static func cancelled() -> CacheError { CacheError(code: .cancelled, details: "cancelled") }
}
