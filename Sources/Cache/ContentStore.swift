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
/// Every call blocks: run them on a thread pool.
public struct ContentStore: Sendable {
    public let root: String
    public var objectsDirectory: String { self.root + "/objects" }
    public var partialDirectory: String { self.root + "/partial" }

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    /// Creates the directories and removes partial files left by a crash.
    /// Returns how many partial files were removed.
    @discardableResult
    public func prepare() throws -> Int {
        let fm = FileManager.default
        // Exports hold personal data: the folders are the gateway's user's
        // alone (0700), and so is every file (0600; earlier versions made 0644).
        for dir in [self.root, self.objectsDirectory, self.partialDirectory] {
            do {
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw CacheError.system("mkdir", path: dir, errno: errno == 0 ? EACCES : errno)
            }
            // Best effort: a folder the gateway may write but does not own
            // (a mounted volume) keeps its mode; the files in it are 0600.
            _ = chmod(dir, 0o700)
        }
        for name in self.objectNames() { chmod(self.objectsDirectory + "/" + name, 0o600) }
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

    /// Starts a new partial file.
    public func createWriter(suffix: String) throws -> CacheWriter {
        try CacheWriter(store: self, suffix: suffix)
    }

    /// Gives a sealed file its name: renames it into `objects/` and syncs the
    /// folder, so the name exists only for a complete, durable file. With
    /// `keepExisting`, an object of that name that already exists (the same
    /// bytes, by its SHA-256) is kept and the sealed copy removed, so readers
    /// of the existing file and the count of its bytes stay as they are.
    public func install(_ sealed: SealedFile, keepExisting: Bool = false) throws -> PublishedFile {
        if keepExisting, access(sealed.path, F_OK) == 0 {
            unlink(sealed.partialPath)
            return sealed.published
        }
        if rename(sealed.partialPath, sealed.path) != 0 {
            let err = errno
            unlink(sealed.partialPath)
            throw CacheError.system("rename", path: sealed.path, errno: err)
        }
        let dir = open(self.objectsDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 {
            fsync(dir)
            close(dir)
        }
        return sealed.published
    }

    /// True when a file can be created, written, synced and removed in `partial/`.
    public func isWritable() -> Bool {
        let path = "\(self.partialDirectory)/.probe-\(UUID().uuidString)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { unlink(path) }
        let ok = "ok".utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, 2) } == 2 && fsync(fd) == 0
        return close(fd) == 0 && ok
    }

    /// Removes a finished file; readers that have it open keep reading it.
    /// Refuses (false) any path outside `objects/`.
    @discardableResult
    public func removeObject(atPath path: String) -> Bool {
        guard path.hasPrefix(self.objectsDirectory + "/"), !path.dropFirst(self.objectsDirectory.count + 1).contains("/") else { return false }
        return unlink(path) == 0
    }

    /// The names in `objects/`.
    public func objectNames() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: self.objectsDirectory)) ?? []
    }

    /// Bytes the filesystem of the cache has free for this process (statvfs).
    public func freeBytes() -> Int? {
        var stats = statvfs()
        guard statvfs(self.root, &stats) == 0 else { return nil }
        let (bytes, overflow) = Int(stats.f_bavail).multipliedReportingOverflow(by: Int(stats.f_frsize))
        return overflow ? Int.max : bytes
    }
}

extension ContentStore {
    /// Removes a sealed file that will not be installed.
    public func discard(_ sealed: SealedFile) {
        guard sealed.partialPath.hasPrefix(self.partialDirectory + "/") else { return }
        unlink(sealed.partialPath)
    }
}
