import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The cache directory: finished files named by their SHA-256 under `objects/`,
/// files being written under `partial/<instance>/`.
///
/// Files reach `objects/` only by `rename(2)` after `fsync(2)`, so a crash at any
/// moment leaves either no file or a complete one there; whatever is left in
/// this instance's partial folder at start-up is debris of its crash and is
/// removed by `prepare()`. Several gateways may share the directory (a
/// cluster): each writes in a partial folder of its own, and never touches
/// another's; `objects/` is shared, its names being their contents' hashes.
/// Every call blocks: run them on a thread pool.
public struct ContentStore: Sendable {
    public let root: String
    /// The folder of this instance's partial files, relative to `root`.
    public let partialFolder: String
    public var objectsDirectory: String { self.root + "/objects" }
    public var partialDirectory: String { self.root + "/" + self.partialFolder }

    /// - Parameter instance: the folder under `partial/` of this gateway
    ///   (its INSTANCE_ID, made safe as a file name); nil: `partial/` itself.
    public init(root: String, instance: String? = nil) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.partialFolder = instance.map { "partial/" + Self.folderName($0) } ?? "partial"
    }

    /// A file name for an instance id: other bytes than `A-Z a-z 0-9 . _ -`
    /// as `%XX` (so two ids never share a folder), and never `.` or `..`.
    static func folderName(_ instance: String) -> String {
        var name = ""
        for byte in instance.utf8 {
            if Self.isNameByte(byte), byte != UInt8(ascii: "%") {
                name.unicodeScalars.append(UnicodeScalar(byte))
            } else {
                name += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return name.isEmpty || name == "." || name == ".." ? "%" + name.utf8.map { String($0, radix: 16) }.joined() : name
    }

    private static func isNameByte(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// The absolute path of a partial file named relative to `root`
    /// (`partial/<instance>/<name>`, as another instance records it), or nil
    /// when the name is not one: nothing outside `partial/` is ever followed.
    public func sharedPartialPath(_ relative: String) -> String? {
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "partial", parts.dropFirst().allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { return nil }
        return self.root + "/" + relative
    }

    /// Creates the directories and removes partial files left by a crash.
    /// Returns how many partial files were removed.
    @discardableResult
    public func prepare() throws -> Int {
        let fm = FileManager.default
        // Exports hold personal data: the folders are the gateway's user's
        // alone (0700), and so is every file (0600; earlier versions made 0644).
        for dir in [self.root, self.objectsDirectory, self.root + "/partial", self.partialDirectory] {
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
        // Only this instance's own debris: the other folders are other
        // gateways' files being written now. (Files directly in `partial/`
        // are an earlier version's, of a single gateway.)
        var removed = 0
        for name in (try? fm.contentsOfDirectory(atPath: self.partialDirectory)) ?? [] {
            if unlink(self.partialDirectory + "/" + name) == 0 { removed += 1 }
        }
        if self.partialFolder != "partial" {
            for name in (try? fm.contentsOfDirectory(atPath: self.root + "/partial")) ?? [] where name.hasSuffix(".partial") || name.hasSuffix(".spool") {
                if unlink(self.root + "/partial/" + name) == 0 { removed += 1 }
            }
        }
        return removed
    }

    /// Where the finished file with this digest and suffix lives.
    public func objectPath(sha256 hex: String, suffix: String) -> String {
        "\(self.objectsDirectory)/\(hex)\(suffix)"
    }

    /// Starts a new partial file, named `name` in this instance's partial
    /// folder (a name others can find it by), or a fresh name.
    public func createWriter(suffix: String, name: String? = nil) throws -> CacheWriter {
        try CacheWriter(store: self, suffix: suffix, name: name)
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

    /// The partial folders of other gateways sharing this cache (their
    /// names under `partial/`), and this instance's folder name.
    public func otherPartialFolders() -> [String] {
        let own = self.partialFolder.split(separator: "/").last.map(String.init) ?? ""
        let names = (try? FileManager.default.contentsOfDirectory(atPath: self.root + "/partial")) ?? []
        return names.filter { name in
            var info = stat()
            return name != own && stat(self.root + "/partial/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
        }
    }

    /// The folder name `instance` writes its partial files in.
    public static func partialFolderName(of instance: String) -> String {
        Self.folderName(instance)
    }

    /// Removes the files of another gateway's partial folder that were last
    /// written more than `age` seconds ago: debris of a gateway that stopped
    /// without cleaning up. The folder stays: that gateway, idle or started
    /// again, writes in it. Returns how many files went.
    @discardableResult
    public func removeStalePartials(in folder: String, olderThan age: TimeInterval) -> Int {
        let path = self.root + "/partial/" + folder
        guard !folder.contains("/"), folder != ".", folder != ".." else { return 0 }
        var removed = 0
        let now = Date().timeIntervalSince1970
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            var info = stat()
            guard stat(path + "/" + name, &info) == 0, now - TimeInterval(info.st_mtim.tv_sec) > age else { continue }
            if unlink(path + "/" + name) == 0 { removed += 1 }
        }
        return removed
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

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - self.count)) + self
    }
}

extension ContentStore {
    /// Removes a sealed file that will not be installed.
    public func discard(_ sealed: SealedFile) {
        guard sealed.partialPath.hasPrefix(self.partialDirectory + "/") else { return }
        unlink(sealed.partialPath)
    }
}
