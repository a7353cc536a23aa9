import Crypto
import Foundation

/// Signed download links, as S3's presigned URLs: the link carries its
/// expiry and an HMAC-SHA-256 over the export id and that expiry, so it
/// works without a token (for curl, wget, aria2c and browsers) until it
/// expires, for that export only.
///
/// `/exports/<id>/download?expires=<unix seconds>&signature=<64 hex digits>`
///
/// A link is judged on its exact bytes: the id as the gateway writes it
/// (lower case), `expires` in plain decimal, the signature in lower-case
/// hex, in that order and nothing else. Any other spelling is a bad link,
/// so no byte of a link can be changed and still pass. Checking needs only
/// the key and the link, never the export: a bad link gets the same 403
/// whether or not the export exists.
struct LinkSigner: Sendable {
    /// The key's bytes (a `SymmetricKey` is not `Sendable`; one is made per use).
    private let key: [UInt8]
    /// LINK_TTL: how long a link works after it is made.
    let lifetime: TimeInterval

    init(key: [UInt8], lifetime: TimeInterval) {
        self.key = key
        self.lifetime = lifetime
    }

    /// A link to download `id`, valid for `lifetime` from `now`.
    func downloadLink(for id: UUID, now: Date = Date()) -> String {
        let idText = id.uuidString.lowercased()
        let expires = Int(now.timeIntervalSince1970.rounded(.down)) + Int(self.lifetime)
        return "/exports/\(idText)/download?expires=\(expires)&signature=\(self.signature(idText, expires))"
    }

    /// True when `query` (the raw query string, without `?`) is a link made
    /// by `downloadLink` for the export `idText` (the raw path segment) that
    /// has not expired.
    func verify(idText: String, query: String, now: Date = Date()) -> Bool {
        let parts = query.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: false)
        guard parts.count == 2,
            let expiresText = Self.value(parts[0], name: "expires"), let signature = Self.value(parts[1], name: "signature"),
            (1...12).contains(expiresText.count), expiresText.allSatisfy(ASCII.isDigit), expiresText.first != UInt8(ascii: "0"),
            signature.count == 64,
            let expires = Int(String(decoding: expiresText, as: UTF8.self))
        else { return false }
        return ConstantTime.equal(Array(self.signature(idText, expires).utf8), signature) && Double(expires) > now.timeIntervalSince1970
    }

    /// The hex HMAC of one link. The message names its purpose, so a
    /// signature made for anything else one day cannot pass as a download.
    private func signature(_ idText: String, _ expires: Int) -> String {
        let message = "download\n\(idText)\n\(expires)"
        let mac = HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: SymmetricKey(data: self.key))
        return Hex.string(mac)
    }

    /// The bytes after `name=` in one `name=value` part, if it is that part.
    private static func value(_ part: Substring.UTF8View, name: String) -> [UInt8]? {
        let prefix = Array((name + "=").utf8)
        guard part.starts(with: prefix) else { return nil }
        return Array(part.dropFirst(prefix.count))
    }
}
