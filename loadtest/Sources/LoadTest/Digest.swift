import Synchronization

/// What a complete file must be: its size and SHA-256 (lowercase hex).
struct Digest: Sendable, Equatable, CustomStringConvertible {
    let size: Int
    let sha256: String

    var description: String { "\(self.size) bytes, sha256 \(self.sha256.prefix(16))…" }
}

/// The bytes each request gave when its export completed, by query string.
/// The bytes are a pure function of the request, so a second completed
/// export of the same query with other bytes is an error, and a download of
/// a cancelled export that still ended whole is checked against these.
/// Bounded: past `capacity` queries nothing more is kept.
final class KnownDigests: Sendable {
    private let capacity: Int
    private let entries = Mutex<[String: Digest]>([:])

    init(capacity: Int = 50_000) { self.capacity = capacity }

    /// Keeps `digest` for `query`; returns the different one kept before, if any.
    func learn(_ query: String, _ digest: Digest) -> Digest? {
        self.entries.withLock { entries in
            if let known = entries[query] { return known == digest ? nil : known }
            if entries.count < self.capacity { entries[query] = digest }
            return nil
        }
    }

    func digest(for query: String) -> Digest? { self.entries.withLock { $0[query] } }
}
