import Crypto
import Foundation

/// The API tokens of API_TOKENS and API_TOKENS_FILE, and the check of a
/// request's `Authorization: Bearer` header against them.
///
/// Only each token's SHA-256 is kept in memory; a presented token is hashed
/// and compared with every known hash in constant time (all of them, with
/// no early exit), so neither the comparison nor the number of tokens
/// tried leaks a token's bytes. An export records the token's *id*, never
/// the token: the name given as `name:token`, else `t-` and the first 16 hex
/// digits of the token's SHA-256 (stable across restarts, useless to guess
/// the token from).
struct APITokens: Sendable {
    struct Token: Sendable {
        /// Stable, safe to store and log.
        let id: String
        let digest: [UInt8]
    }

    /// An entry of API_TOKENS or API_TOKENS_FILE that cannot be used.
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    let tokens: [Token]

    /// One token under a fixed id (METRICS_TOKEN), checked like the API's.
    static func single(_ token: String, id: String) -> APITokens {
        APITokens(tokens: [Token(id: id, digest: Array(SHA256.hash(data: Array(token.utf8))))])
    }

    var isEmpty: Bool { self.tokens.isEmpty }

    /// Fewest bytes a token may have: a bearer token must not be guessable.
    static let minimumLength = 16

    /// Parses entries (`name:token` or `token`), from a comma list
    /// (API_TOKENS) and lines of a file (API_TOKENS_FILE; `#` comments and
    /// blank lines skipped). Messages never repeat a token.
    static func parse(list: String?, file: String?) throws(Invalid) -> APITokens {
        var entries: [(source: String, text: Substring)] = []
        if let list {
            for (index, item) in list.split(separator: ",").enumerated() { entries.append(("API_TOKENS entry \(index + 1)", item)) }
        }
        if let file, !file.isEmpty {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw Invalid(description: "API_TOKENS_FILE=\(file) cannot be read as UTF-8 text")
            }
            for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                entries.append(("API_TOKENS_FILE line \(index + 1)", Substring(trimmed)))
            }
        }
        var tokens: [Token] = []
        for (source, raw) in entries {
            let entry = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if entry.isEmpty { continue }
            let name: String?
            let secret: String
            if let colon = entry.firstIndex(of: ":") {
                name = String(entry[..<colon])
                secret = String(entry[entry.index(after: colon)...])
            } else {
                name = nil
                secret = entry
            }
            if let name, !Self.isValidName(name) {
                throw Invalid(description: "\(source): a token's name is 1 to 64 of A-Z a-z 0-9 . _ - and does not start with t- (the ids of unnamed tokens)")
            }
            guard secret.utf8.count >= Self.minimumLength, secret.utf8.count <= 512, Self.isBearerToken(secret) else {
                throw Invalid(description: "\(source): a token is \(Self.minimumLength) to 512 of A-Z a-z 0-9 - . _ ~ + / (then optional =)")
            }
            // `.env.example` ships a placeholder so the setting is visible; it is
            // public, so it never opens anything.
            guard !secret.lowercased().contains("change-me") else {
                throw Invalid(description: "\(source): replace the placeholder token of .env.example with your own (e.g. openssl rand -hex 32)")
            }
            let digest = Array(SHA256.hash(data: Array(secret.utf8)))
            let id = name ?? "t-" + Hex.string(digest.prefix(8))
            if tokens.contains(where: { $0.id == id }) { throw Invalid(description: "\(source): the token name \(id) is used twice") }
            if tokens.contains(where: { $0.digest == digest }) { throw Invalid(description: "\(source): the same token is listed twice") }
            tokens.append(Token(id: id, digest: digest))
        }
        return APITokens(tokens: tokens)
    }

    /// The id of the token an `Authorization` header carries, or nil when
    /// the header is missing, is not `Bearer`, or names no known token.
    func owner(authorization header: String?) -> String? {
        guard let header, let presented = Self.bearerToken(header) else { return nil }
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var found: String?
        // Every token is compared, whole: the time does not depend on where a match is.
        for token in self.tokens where ConstantTime.equal(token.digest, digest) {
            found = token.id
        }
        return found
    }

    /// The token of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
    static func bearerToken(_ header: String) -> String? {
        let bytes = Array(header.utf8)
        guard bytes.count > 7, String(decoding: bytes.prefix(6), as: UTF8.self).lowercased() == "bearer", bytes[6] == UInt8(ascii: " ") else { return nil }
        let token = String(decoding: bytes.dropFirst(7), as: UTF8.self).trimmingSpaces()
        return token.isEmpty ? nil : token
    }

    /// RFC 6750's b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
    static func isBearerToken(_ text: String) -> Bool {
        var seenEquals = false
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "="): seenEquals = true
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                if seenEquals { return false }
            default: return false
            }
        }
        return !text.isEmpty && text.utf8.first != UInt8(ascii: "=")
    }

    /// A name never looks like an unnamed token's id (`t-…`): a name chosen so
    /// would inherit the exports of a bare token that was removed.
    static func isValidName(_ name: String) -> Bool {
        !name.lowercased().hasPrefix("t-") && (1...64).contains(name.utf8.count)
            && name.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                    true
                default: false
                }
            }
    }
}
