/// The status JSON (`POST /exports/csv`'s 202 and `GET /exports/{id}/status`),
/// as far as the load test reads it.
struct ExportStatus: Decodable, Sendable {
    struct Links: Decodable, Sendable {
        let status: String
        let download: String
    }

    let exportId: String
    let status: String
    let rowsWritten: Int?
    let bytesWritten: Int?
    let progress: Double?
    let startedAt: String?
    let completedAt: String?
    let sizeBytes: Int?
    let sha256: String?
    let gzipSizeBytes: Int?
    let gzipSha256: String?
    let error: String?
    let downloadUrl: String?
    let links: Links?

    var isTerminal: Bool { ["completed", "failed", "cancelled"].contains(self.status) }

    /// The finished file's size and hash, once completed.
    var digest: Digest? {
        guard self.status == "completed", let size = self.sizeBytes, let sha = self.sha256 else { return nil }
        return Digest(size: size, sha256: sha)
    }

    /// Rules the API documents for this JSON; each broken one is a message.
    func problems(expectedId: String? = nil) -> [String] {
        var problems: [String] = []
        if let expectedId, expectedId != self.exportId { problems.append("exportId \(self.exportId), asked for \(expectedId)") }
        if !["queued", "running", "completed", "failed", "cancelled"].contains(self.status) { problems.append("status \"\(self.status)\" is not one the API has") }
        if let p = self.progress, !(0...1).contains(p) { problems.append("progress \(p) outside 0...1") }
        if self.progress == 1, self.status != "completed" { problems.append("progress 1 while \(self.status)") }
        if self.status == "completed" {
            if self.sizeBytes == nil { problems.append("completed without sizeBytes") }
            if let sha = self.sha256 {
                if !Hex.isSHA256(sha) { problems.append("sha256 \"\(sha)\" is not 64 lowercase hex digits") }
            } else {
                problems.append("completed without sha256")
            }
            if let size = self.sizeBytes, let written = self.bytesWritten, written != size { problems.append("bytesWritten \(written) but sizeBytes \(size)") }
        } else if self.sha256 != nil || self.sizeBytes != nil {
            problems.append("sha256/sizeBytes while \(self.status)")
        }
        if self.status == "failed", self.error == nil { problems.append("failed without error") }
        return problems
    }
}

enum Hex {
    static func isSHA256(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    static func string<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
