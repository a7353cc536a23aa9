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
        if let existing = Self.read(path) { return existing }
        // Written whole under a temporary name, then linked to its name: a
        // concurrent start (another instance on the same folder) either
        // links first or reads the winner's key, never half a file.
        var random = SystemRandomNumberGenerator()
        let key = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let text = key.map { String(format: "%02x", $0) }.joined() + "\n"
        let temporary = path + ".\(UUID().uuidString.lowercased()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Invalid(description: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        let written = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        defer { unlink(temporary) }
        guard written == text.utf8.count, synced == 0 else { throw Invalid(description: "cannot write \(temporary)") }
        if link(temporary, path) != 0, errno != EEXIST {
            throw Invalid(description: "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        guard let stored = Self.read(path) else { throw Invalid(description: "\(path) does not hold a key (64 hex digits); remove it to make a new one") }
        return stored
    }

    /// The key in the file, if it exists and holds one; makes it 0600 if it was not.
    private static func read(_ path: String) -> [UInt8]? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        chmod(path, 0o600)
        let hex = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard hex.count == 64 else { return nil }
        var key: [UInt8] = []
        var index = 0
        while index < 64 {
            guard let byte = UInt8(String(decoding: hex[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            key.append(byte)
            index += 2
        }
        return key
    }
}
