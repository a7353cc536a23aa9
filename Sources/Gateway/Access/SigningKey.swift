import Crypto
import Foundation

/// The key that signs download links: SIGNING_KEY when set (every instance
/// that shares a cache must then have the same), else one generated once and
/// kept in `CACHE_DIR/signing.key` (mode 0600), which instances sharing the
/// cache folder share too. Blocking (file I/O): called once at start.
enum SigningKey {
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    static let fileName = "signing.key"
    /// Fewest bytes of a configured key: an HMAC key shorter than its hash is weak.
    static let minimumLength = 32

    static func load(configured: String?, cacheDirectory: String) throws(Invalid) -> [UInt8] {
        if let configured, !configured.isEmpty {
            guard configured.utf8.count >= Self.minimumLength else {
                throw Invalid(description: "SIGNING_KEY must have at least \(Self.minimumLength) bytes (e.g. `openssl rand -hex 32`)")
            }
            return Array(configured.utf8)
        }
        let path = cacheDirectory + "/" + Self.fileName
        Self.removeLeftovers(in: cacheDirectory, key: path)
        if let existing = Self.read(path) { return existing }
        // Written whole under a temporary name, then linked to its name: a
        // concurrent start (another instance on the same folder) either
        // links first or reads the winner's key, never half a file.
        var random = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let text = Hex.string(key) + "\n"
        let temporary = path + ".\(UUID().uuidString.lowercased()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Invalid(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let written = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == text.utf8.count, synced == 0 else {
            unlink(temporary)
            throw Invalid(description: "cannot write \(temporary)")
        }
        let linked = link(temporary, path) == 0 ? 0 : errno
        // Gone before the key is read back: the key file must have one name.
        unlink(temporary)
        if linked != 0, linked != EEXIST {
            throw Invalid(description: "cannot create \(path): \(String(cString: strerror(linked)))")
        }
        // The name outlives a crash (links made before it stay valid).
        let directory = open(cacheDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        // Another instance that linked first may not have removed its
        // temporary name yet (the file has two names for a moment): a few tries.
        for attempt in 0..<20 {
            if let stored = Self.read(path) { return stored }
            if attempt < 19 { usleep(50_000) }
        }
        throw Invalid(description: "\(path) does not hold a key (64 hex digits in a plain file of its own); remove it to make a new one")
    }

    /// Temporary files of a start that crashed: the one that was linked as
    /// the key already (it gave the key a second name, which `read` refuses)
    /// and any older than a minute. A concurrent start's own fresh one stays.
    private static func removeLeftovers(in directory: String, key: String) {
        var keyStats = stat()
        let keyExists = lstat(key, &keyStats) == 0
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(Self.fileName + ".") && name.hasSuffix(".tmp") {
            let path = directory + "/" + name
            var stats = stat()
            guard lstat(path, &stats) == 0 else { continue }
            let sameFile = keyExists && stats.st_ino == keyStats.st_ino && stats.st_dev == keyStats.st_dev
            let old = time(nil) - stats.st_mtim.tv_sec > 60
            if sameFile || old { unlink(path) }
        }
    }

    /// The key in the file, if it exists and holds one (64 hex digits, a
    /// line end allowed, not all zero); makes it 0600 if it was not. Only a
    /// plain file with one name: not through a symbolic link (`O_NOFOLLOW`),
    /// not a hard link to a file elsewhere, not a FIFO (`O_NONBLOCK`, so the
    /// start never waits on one), so nothing planted there serves as the key
    /// or has its mode changed.
    private static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var stats = stat()
        guard fstat(fd, &stats) == 0, (stats.st_mode & S_IFMT) == S_IFREG, stats.st_nlink == 1 else { return nil }
        fchmod(fd, 0o600)
        var buffer = [UInt8](repeating: 0, count: 80)
        let count = buffer.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
        guard count >= 64 else { return nil }
        let text = Array(buffer.prefix(count))
        guard count == 64 || (count == 65 && text.last == UInt8(ascii: "\n")) else { return nil }
        var key: [UInt8] = []
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = Hex.value(text[index]), let low = Hex.value(text[index + 1]) else { return nil }
            key.append(high << 4 | low)
        }
        return key.contains { $0 != 0 } ? key : nil
    }
}
