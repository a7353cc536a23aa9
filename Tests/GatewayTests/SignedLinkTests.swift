import Foundation
import Testing

@testable import Gateway

/// Signed download links: they work without a token for curl, wget -c and
/// aria2c (ranges, If-Range, gzip and HEAD as with a token), for their
/// export only and until they expire; a link altered in any byte, expired or
/// made for another export gets 403, the same whether or not it exists.
@Suite(.serialized) struct SignedLinkTests {
    /// A completed export made with alice's token: the server, the status JSON and the bytes.
    static func completed(_ server: TestServer, query: String = "country_code=DE") async throws -> (id: String, link: String, bytes: Data) {
        let created = try await curl(server.url("/exports/csv?\(query)"), method: "POST", AccessTests.bearer(AccessTests.alice))
        let id = try #require(created.json["exportId"] as? String)
        var status: [String: Any] = [:]
        try await eventually("completion") {
            status = try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).json
            return status["status"] as? String == "completed"
        }
        let link = try #require(status["downloadUrl"] as? String)
        let bytes = try await curl(server.url("/exports/\(id)/download"), AccessTests.bearer(AccessTests.alice)).body
        #expect(bytes.count == status["sizeBytes"] as? Int)
        return (id, link, bytes)
    }

    @Test(.timeLimit(.minutes(3)))
    func aLinkWorksWithoutATokenForCurlWgetAndAria2() async throws {
        let server = try await AccessTests.server(rows: 6000)
        defer { Task { await server.stop() } }
        let (id, link, bytes) = try await Self.completed(server)
        #expect(link.hasPrefix("/exports/\(id)/download?expires="))
        let url = server.url(link)

        let whole = try await curl(url)
        #expect(whole.status == 200)
        #expect(whole.body == bytes)
        let day = Self.utcDay()
        #expect(whole.headers["content-disposition"] == "attachment; filename=\"users-\(day)-\(id.prefix(8)).csv\"")
        let etag = try #require(whole.headers["etag"])

        let head = try await curl(url, ["-I"])
        #expect(head.status == 200 && head.headers["content-length"] == String(bytes.count))
        let range = try await curl(url, ["-H", "Range: bytes=100-199"])
        #expect(range.status == 206 && range.body == bytes.subdata(in: 100..<200))
        let ifRange = try await curl(url, ["-H", "Range: bytes=100-199", "-H", "If-Range: \(etag)"])
        #expect(ifRange.status == 206)
        // Positions past what an Int holds are still positions past the end.
        #expect(try await curl(url, ["-H", "Range: bytes=9223372036854775806-"]).status == 416)
        #expect(try await curl(url, ["-H", "Range: bytes=99999999999999999999999999-"]).status == 416)
        let clamped = try await curl(url, ["-H", "Range: bytes=0-99999999999999999999999999"])
        #expect(clamped.status == 206 && clamped.body == bytes)
        let staleIfRange = try await curl(url, ["-H", "Range: bytes=100-199", "-H", "If-Range: \"other\""])
        #expect(staleIfRange.status == 200 && staleIfRange.body == bytes)
        let gzip = try await curl(url, ["-H", "Accept-Encoding: gzip"])
        #expect(gzip.status == 200 && gzip.headers["content-encoding"] == "gzip")
        #expect(gzip.headers["content-disposition"] == "attachment; filename=\"users-\(day)-\(id.prefix(8)).csv.gz\"")
        #expect(try await gunzip(gzip.body) == bytes)

        // wget -c resumes a partial file from where it stopped.
        let folder = try temporaryDirectory("links")
        let partial = folder + "/wget.csv"
        try bytes.prefix(1000).write(to: URL(fileURLWithPath: partial))
        let wget = try await run("wget", ["-q", "-c", "-O", partial, url])
        #expect(wget.status == 0, "\(wget.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: partial)) == bytes)

        // aria2c with 4 connections, each a range of the file.
        let aria = try await run("aria2c", ["-q", "-x4", "-s4", "-k1M", "--min-split-size=1M", "--allow-overwrite=true", "--auto-file-renaming=false", "-d", folder, "-o", "aria.csv", url])
        #expect(aria.status == 0, "\(aria.text) \(aria.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: folder + "/aria.csv")) == bytes)
        try? FileManager.default.removeItem(atPath: folder)
    }

    @Test(.timeLimit(.minutes(3)))
    func anAlteredExpiredOrBorrowedLinkIsRefusedAlike() async throws {
        let server = try await AccessTests.server()
        defer { Task { await server.stop() } }
        let (id, link, _) = try await Self.completed(server)
        let (otherID, _, _) = try await Self.completed(server, query: "country_code=FR")
        let refused = try await curl(server.url("/exports/\(UUID().uuidString.lowercased())/download?expires=1&signature=\(String(repeating: "0", count: 64))"))
        #expect(refused.status == 403)

        // Every byte of the link (after its leading `/`), changed to another:
        // refused. (Changing the `?` leaves no query, so no link at all: then
        // it is a request without a token, 401.)
        let original = Array(link.utf8)
        var statuses: [Int: Int] = [:]
        for index in original.indices.dropFirst() {
            var altered = original
            altered[index] = Self.other(than: original[index])
            let result = try await curl(server.url(String(decoding: altered, as: UTF8.self)), ["--path-as-is"])
            statuses[result.status, default: 0] += 1
            if original[index] == UInt8(ascii: "?") {
                #expect(result.status == 401)
            } else {
                #expect(result.status == 403, "byte \(index) of \(link)")
                #expect(result.body == refused.body)
            }
        }
        #expect(statuses[200] == nil)
        // Extra or repeated parameters, another order, another case: refused.
        let query = String(link[link.index(after: link.firstIndex(of: "?")!)...])
        let parts = query.split(separator: "&")
        for variant in [query + "&x=1", query + "&" + query, "\(parts[1])&\(parts[0])", query.uppercased(), query.replacingOccurrences(of: "=", with: "=%30")] {
            #expect(try await curl(server.url("/exports/\(id)/download?\(variant)")).status == 403, "\(variant)")
        }
        // Another export's id with this link's signature: refused.
        #expect(try await curl(server.url("/exports/\(otherID)/download?\(query)")).status == 403)
        // A link opens the download only, never status or delete.
        #expect(try await curl(server.url("/exports/\(id)/status?\(query)")).status == 403)
        #expect(try await curl(server.url("/exports/\(id)?\(query)"), method: "DELETE").status == 403)
        #expect(try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).status == 200)
    }

    @Test(.timeLimit(.minutes(2)))
    func aLinkExpiresAfterLinkTTLWhetherOrNotItsExportExists() async throws {
        let server = try await AccessTests.server { $0.access.linkTTLSeconds = 2 }
        defer { Task { await server.stop() } }
        let (id, link, bytes) = try await Self.completed(server)
        #expect(try await curl(server.url(link)).body == bytes)
        // A link the server's key signed for an export that does not exist: valid, so 404…
        let key = try SigningKey.load(configured: nil, cacheDirectory: server.cacheDirectory)
        let signer = LinkSigner(key: key, lifetime: 2)
        let ghost = signer.downloadLink(for: UUID())
        #expect(try await curl(server.url(ghost)).status == 404)
        try await Task.sleep(for: .seconds(3))
        // …and once expired, the same 403 as the real one's.
        let expired = try await curl(server.url(link))
        let expiredGhost = try await curl(server.url(ghost))
        #expect(expired.status == 403 && expiredGhost.status == 403 && expired.body == expiredGhost.body)
        // A new status gives a new link.
        let fresh = try #require(try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).json["downloadUrl"] as? String)
        #expect(try await curl(server.url(fresh)).body == bytes)
    }

    @Test func theSigningKeyIsMadeOnceAndKeptPrivate() throws {
        let folder = try temporaryDirectory("key")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try SigningKey.load(configured: nil, cacheDirectory: folder)
        let second = try SigningKey.load(configured: nil, cacheDirectory: folder)
        #expect(first == second && first.count == 32)
        let mode = try #require(FileManager.default.attributesOfItem(atPath: folder + "/signing.key")[.posixPermissions] as? Int)
        #expect(mode == 0o600)
        #expect(try SigningKey.load(configured: String(repeating: "k", count: 32), cacheDirectory: folder) == Array(String(repeating: "k", count: 32).utf8))
        #expect(throws: SigningKey.Invalid.self) { try SigningKey.load(configured: "short", cacheDirectory: folder) }
        // A key file that is not 64 hex digits, or is a link, is refused, never read as a weak key.
        let other = try temporaryDirectory("key")
        defer { try? FileManager.default.removeItem(atPath: other) }
        for bad in [String(repeating: "+0", count: 32), String(repeating: "g", count: 64), String(repeating: "a", count: 63), "", String(repeating: "0", count: 64)] {
            try bad.write(toFile: other + "/signing.key", atomically: false, encoding: .utf8)
            #expect(throws: SigningKey.Invalid.self, "\(bad)") { try SigningKey.load(configured: nil, cacheDirectory: other) }
        }
        try FileManager.default.removeItem(atPath: other + "/signing.key")
        try FileManager.default.createSymbolicLink(atPath: other + "/signing.key", withDestinationPath: folder + "/signing.key")
        #expect(throws: SigningKey.Invalid.self) { try SigningKey.load(configured: nil, cacheDirectory: other) }
        try FileManager.default.removeItem(atPath: other + "/signing.key")
        try FileManager.default.linkItem(atPath: folder + "/signing.key", toPath: other + "/signing.key")
        #expect(throws: SigningKey.Invalid.self) { try SigningKey.load(configured: nil, cacheDirectory: other) }
        try FileManager.default.removeItem(atPath: other + "/signing.key")
        #expect(mkfifo(other + "/signing.key", 0o600) == 0)
        #expect(throws: SigningKey.Invalid.self) { try SigningKey.load(configured: nil, cacheDirectory: other) }
        // A start that crashed after linking its temporary file as the key
        // (two names) leaves nothing that stops the next start.
        let crashed = try temporaryDirectory("key")
        defer { try? FileManager.default.removeItem(atPath: crashed) }
        let made = try SigningKey.load(configured: nil, cacheDirectory: crashed)
        try FileManager.default.linkItem(atPath: crashed + "/signing.key", toPath: crashed + "/signing.key.0c9e.tmp")
        #expect(try SigningKey.load(configured: nil, cacheDirectory: crashed) == made)
        #expect(!FileManager.default.fileExists(atPath: crashed + "/signing.key.0c9e.tmp"))
        // Links from one key do not pass another.
        let id = UUID()
        let link = LinkSigner(key: first, lifetime: 60).downloadLink(for: id)
        let query = String(link.split(separator: "?")[1])
        #expect(LinkSigner(key: first, lifetime: 60).verify(idText: id.uuidString.lowercased(), query: query))
        #expect(!LinkSigner(key: Array(repeating: 7, count: 32), lifetime: 60).verify(idText: id.uuidString.lowercased(), query: query))
        #expect(!LinkSigner(key: first, lifetime: 60).verify(idText: id.uuidString.uppercased(), query: query))
    }

    @Test(.timeLimit(.minutes(2)))
    func cacheFoldersAndFilesAreTheGatewaysAlone() async throws {
        let server = try await AccessTests.server()
        defer { Task { await server.stop() } }
        _ = try await Self.completed(server)
        func mode(_ path: String) throws -> Int { try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) }
        for folder in ["", "/objects", "/partial"] {
            #expect(try mode(server.cacheDirectory + folder) == 0o700, "\(folder)")
        }
        #expect(try mode(server.cacheDirectory + "/signing.key") == 0o600)
        let objects = server.files(in: "objects")
        #expect(!objects.isEmpty)
        for name in objects { #expect(try mode(server.cacheDirectory + "/objects/" + name) == 0o600, "\(name)") }
    }

    /// Another printable byte of the same kind, so the link stays a well-formed URL.
    static func other(than byte: UInt8) -> UInt8 {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "8"), UInt8(ascii: "a")...UInt8(ascii: "y"): byte + 1
        case UInt8(ascii: "9"): UInt8(ascii: "0")
        case UInt8(ascii: "z"): UInt8(ascii: "a")
        default: UInt8(ascii: "x")
        }
    }

    static func utcDay() -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        let parts = calendar.dateComponents([.year, .month, .day], from: Date())
        return String(format: "%04d%02d%02d", parts.year!, parts.month!, parts.day!)
    }
}
