/// A complete, immutable file in the store, named by its SHA-256.
public struct PublishedFile: Sendable, Equatable {
    public let path: String
    public let size: Int
    /// Lower-case hex of the SHA-256 of the file's bytes.
    public let sha256: String

    public init(path: String, size: Int, sha256: String) {
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}
