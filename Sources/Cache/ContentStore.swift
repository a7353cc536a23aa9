#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The cache directory: finished files named by their SHA-256 under `objects/`,
/// files being written under `partial/`.
///
/// Files reach `objects/` only by `rename(2)` after `fsync(2)`, so a crash at any
/// moment leaves either no file or a complete one there; whatever is left in
/// `partial/` at start-up is debris of a crash and is removed by `prepare()`.
public struct ContentStore: Sendable {
    public let root: String
    public var objectsDirectory: String { self.root + "/objects" }
    public var partialDirectory: String { self.root + "/partial" }

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    /// Creates the directories and removes partial files left by a crash. Blocking.
    /// Returns how many partial files were removed.
    @discardableResult
    public func prepare() throws -> Int {
        let fm = FileManager.default
        for dir in [self.root, self.objectsDirectory, self.partialDirectory] {
            do {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            } catch {
                throw CacheError.system("mkdir", path: dir, errno: errno == 0 ? EACCES : errno)
            }
        }
        var removed = 0
        for name in (try? fm.contentsOfDirectory(atPath: self.partialDirectory)) ?? [] {
            if unlink(self.partialDirectory + "/" + name) == 0 { removed += 1 }
        }
        return removed
    }

    /// Where the finished file with this digest and suffix lives.
    public func objectPath(sha256 hex: String, suffix: String) -> String {
        "\(self.objectsDirectory)/\(hex)\(suffix)"
    }

    /// Starts a new partial file. Blocking.
    public func createWriter(suffix: String) throws -> CacheWriter {
        try CacheWriter(store: self, suffix: suffix)
    }

    /// True when a file can be created, written, synced and removed in `partial/`. Blocking.
    public func isWritable() -> Bool {
        let path = "\(self.partialDirectory)/.probe-\(UUID().uuidString)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { unlink(path) }
        let ok = "ok".utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, 2) } == 2 && fsync(fd) == 0
        return close(fd) == 0 && ok
    }

    /// Removes a finished file. Readers that have it open keep reading it. Blocking.
    public func removeObject(atPath path: String) {
        precondition(path.hasPrefix(self.objectsDirectory + "/"), "only objects are removed")
        unlink(path)
    }
}
