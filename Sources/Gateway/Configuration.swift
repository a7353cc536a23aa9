import Foundation

/// The gateway's settings, read from the environment and a `.env` file.
///
/// Every key, with its default (`.env.example` and the README list the same):
///
/// Server
/// - `HOST`: address to listen on. Default `127.0.0.1`.
/// - `PORT`: TCP port. Default `8080`.
/// - `MAX_CONNECTIONS`: open client connections served at once. Past it a new
///   connection is answered `503` (except `/health`) and closed; past twice it,
///   connections wait in the listen backlog. Default `1024`.
/// - `REQUEST_HEADER_TIMEOUT`: seconds a client has to send a whole request
///   head once it has started one (or connected). Default `10`.
/// - `KEEP_ALIVE_TIMEOUT`: seconds an idle kept-alive connection stays open. Default `15`.
/// - `MAX_HEADER_BYTES`: bytes of a request head (request line and headers); past it, `431`. Default `16384`.
/// - `SEND_TIMEOUT`: seconds a response may wait for its client to take any of it
///   before it is cut; a client that takes bytes at any rate is never cut
///   (the README's floor: 16 KB/s is tested). Default `60`.
/// - `DOWNLOAD_BUFFER_BYTES`: bytes all downloads' read buffers may take
///   together (suffixes K, M, G). Default `16M`.
/// - `SHUTDOWN_GRACE`: seconds downloads of finished files may take to end
///   after SIGTERM or SIGINT before they are cut. Default `30`.
///
/// Database
/// - `DATABASE_URL`: libpq connection URI or string. Default: empty, which
///   means libpq's own defaults (`PGHOST`, `PGPORT`, `PGUSER`, … or the local socket).
/// - `DATABASE_CONNECT_TIMEOUT`: seconds to wait for a connection. Default `5`.
/// - `JOURNAL_STATEMENT_TIMEOUT`: seconds a journal statement may take. Default `5`.
/// - `SEED_ROWS`: rows to seed when `users` is missing or empty. Default `10000000`.
/// - `SEED`: `false` skips the seeding step entirely. Default `true`.
///
/// Exports
/// - `MAX_CONCURRENT_EXPORTS`: worker threads, i.e. COPYs at once. Default `2`.
/// - `MAX_QUEUED_EXPORTS`: exports that may wait for a worker; beyond it, 429. The
///   export ids that may wait or run at once, coalesced or not, are
///   `MAX_CONCURRENT_EXPORTS + MAX_QUEUED_EXPORTS`. Default `100`.
/// - `TOKEN_MAX_ACTIVE_EXPORTS`: export ids one API token may have waiting or
///   running at once in the cluster (joins included); past it that token
///   alone gets 429. Default: a quarter of `MAX_CONCURRENT_EXPORTS +
///   MAX_QUEUED_EXPORTS`, at least 1. Without tokens there is one tenant and
///   no per-token bound.
/// - `TOKEN_CREATES_PER_MINUTE`: exports (new or joined) one token may ask
///   for per minute in the cluster; past it, 429 with `Retry-After` until its
///   minute ends. `0` is no bound. Default `120`.
/// - `MAX_EXPORTS`: export ids kept at once (until deleted or expired); beyond it, 429. Default `100000`.
/// - `EXPORT_TTL`: seconds an export lives after it was asked for; then 410 Gone. Default `86400`.
/// - `CACHE_TTL`: seconds a completed export's file is reused for an identical request. Default `600`.
/// - `FAST_START`: when PostgreSQL's plan for an export sorts its rows, read a small
///   head of the ids first so the first bytes come at once (`ExportPlan.head`). Default `true`.
/// - `EXPORT_PARALLELISM`: COPYs at most that read one export at once, each a
///   range of ids under one exported snapshot, stitched in id order
///   (`ExportRunner`, `ExportPlan`). The running exports share it: each gets
///   `EXPORT_PARALLELISM / running exports` (at least 1), and an export
///   estimated under 50,000 rows a piece gets fewer. `MAX_CONCURRENT_EXPORTS`
///   counts exports, not pieces: at most `MAX_CONCURRENT_EXPORTS ×
///   EXPORT_PARALLELISM` export connections are open (or kept idle, for at
///   most a minute, for the next export). `1` is one COPY per export.
///   Default: the number of cores, at most 4.
/// - `GZIP_LEVEL`: zlib level (1 fastest … 9 smallest) of the one gzip form made per export. Default `6`.
/// - `GZIP_WORKERS`: gzip forms made at once. Default `1`.
/// - `GZIP_QUEUE`: gzip forms that may wait for a compressor; past it a gzip
///   request gets the CSV uncompressed. Default `8`.
/// - `RANGE_WAIT_SECONDS`: how long a Range request on a running export waits for its bytes
///   (or for the end) before it is answered with the whole live file. Default `15`.
///
/// Cache
/// - `CACHE_DIR`: where finished and partial export files live. Default `./.cache/exports`.
/// - `CACHE_MAX_BYTES`: bytes the cache may hold (suffixes K, M, G, T). Default: half
///   of what the cache could have at start (the free space of its filesystem plus
///   the files already in it). `0` is no bound. Past it, least recently used files
///   that no export needs are evicted; then, for a new export's room, least
///   recently used finished files that exports still refer to (those exports
///   answer 410 `export_evicted` from then on); a new export whose estimated
///   size cannot fit even so gets 507 before it is acknowledged.
/// - `TOKEN_CACHE_SHARE`: percent of `CACHE_MAX_BYTES` one API token's files
///   may take; a token past it makes room by evicting its own least recently
///   used files, never another's. Default `50`.
///
/// Access
/// - `API_TOKENS`: comma list of API tokens, each `name:token` or a bare
///   `token` (16 to 512 of `A-Z a-z 0-9 - . _ ~ + /`, then optional `=`).
///   Set, every `/exports…` request needs `Authorization: Bearer <token>`,
///   and an export is seen only by the token that made it. Default: none.
/// - `API_TOKENS_FILE`: a file of such entries, one per line (`#` comments). Default: none.
/// - `ALLOW_ANONYMOUS`: `true` lets the gateway serve without tokens on an
///   address that is not loopback. Default `false`: without tokens it serves
///   only on loopback and refuses to start elsewhere.
/// - `SIGNING_KEY`: key (32 bytes or more) of the HMAC that signs download
///   links. Default: generated once and kept in `CACHE_DIR/signing.key` (0600).
/// - `LINK_TTL`: seconds a signed download link works. Default `3600`.
/// - `METRICS_TOKEN`: when set, `GET /metrics` needs `Authorization: Bearer <it>`. Default: none.
///
/// Cluster (several gateways on one database and one cache folder)
/// - `INSTANCE_ID`: this gateway's name in the cluster: 1 to 64 of `A-Z a-z
///   0-9 . _ - :`, unique among the gateways sharing the database. It is the
///   owner recorded on the exports it runs, the name of its folder under
///   `CACHE_DIR/partial/`, and its connections' `application_name`
///   (`gateway:<INSTANCE_ID>`). A gateway restarted under the same id takes
///   back its own running exports at once. Default: the host name and
///   `PORT` (`host:8080`); with `PORT=0`, a random suffix is added.
/// - `LEASE_SECONDS`: how long a claim on a running export lasts without
///   renewal (renewed every second): a gateway that stops renewing (killed,
///   cut off) loses its running exports to another after at most this. Default `10`.
///
/// - `LOG_LEVEL`: trace, debug, info, notice, warning, error, critical. Default `info`.
///
/// The environment wins over `.env`; `.env` is read from the working directory.
struct Configuration: Sendable {
    struct HTTP: Sendable {
        var host = "127.0.0.1"
        var port = 8080
        var maxConnections = 1024
        var requestHeaderTimeoutSeconds = 10
        var keepAliveTimeoutSeconds = 15
        var maxHeaderBytes = 16 * 1024
        var sendTimeoutSeconds = 60
        var downloadBufferBytes = 16 << 20
        var shutdownGraceSeconds = 30
    }

    struct Database: Sendable {
        var url = ""
        var connectTimeoutSeconds = 5
        var journalStatementTimeoutSeconds = 5
        var seedRows = 10_000_000
        var seed = true
        /// `gateway:<INSTANCE_ID>`, on every connection (`Configuration.cluster`).
        var applicationName = "gateway:" + Cluster.defaultInstanceID(port: 8080)

        /// How export, health and seeding connections are made.
        var settings: PostgresSettings {
            var settings = PostgresSettings(url: self.url, connectTimeoutSeconds: self.connectTimeoutSeconds)
            settings.applicationName = self.applicationName
            return settings
        }
        /// How journal connections are made: with a statement timeout.
        var journalSettings: PostgresSettings { self.settings.with(statementTimeoutMilliseconds: self.journalStatementTimeoutSeconds * 1000) }
    }

    struct Cache: Sendable {
        var directory = "./.cache/exports"
        /// nil: the default, half of what the cache could have at start; 0: no bound.
        var maxBytes: Int?
        /// TOKEN_CACHE_SHARE, percent.
        var tokenSharePercent = 50
    }

    struct Exports: Sendable {
        var maxConcurrent = 2
        var maxQueued = 100
        /// TOKEN_MAX_ACTIVE_EXPORTS; nil: the default (`tokenActiveLimit`).
        var tokenMaxActive: Int?
        /// TOKEN_CREATES_PER_MINUTE; 0: no bound.
        var tokenCreatesPerMinute = 120
        var maxExports = 100_000
        var gzipLevel = 6
        var gzipWorkers = 1
        var gzipQueue = 8
        var cacheTTLSeconds = 600
        var exportTTLSeconds = 86_400
        var fastStart = true
        /// The number of cores, at most 4 (`EXPORT_PARALLELISM`).
        var parallelism = min(4, max(1, ProcessInfo.processInfo.activeProcessorCount))
        /// Not a setting: the tests lower it to read small tables in pieces.
        var minRowsPerPiece = ExportPlan.minRowsPerPiece
        var rangeWaitSeconds = 15

        /// Export ids one token may have waiting or running at once.
        var tokenActiveLimit: Int { self.tokenMaxActive ?? max(1, (self.maxConcurrent + self.maxQueued) / 4) }
    }

    struct Cluster: Sendable {
        /// INSTANCE_ID; set from the host name and port by `init(environment:)` when not given.
        var instanceID = Cluster.defaultInstanceID(port: 8080)
        var leaseSeconds = 10

        static func defaultInstanceID(port: Int) -> String {
            var buffer = [CChar](repeating: 0, count: 256)
            let host = gethostname(&buffer, buffer.count - 1) == 0 ? String(cString: buffer) : ""
            var name = Array(host.utf8.filter(Self.isIDByte).prefix(48))
            if name.isEmpty { name = Array("gateway".utf8) }
            let base = String(decoding: name, as: UTF8.self) + ":" + String(port)
            // An ephemeral port says nothing: two such gateways on one host must differ.
            return port == 0 ? base + ":" + String(UInt32.random(in: 0...UInt32.max), radix: 16) : base
        }

        static func isIDByte(_ byte: UInt8) -> Bool {
            (48...57).contains(byte) || (65...90).contains(byte) || (97...122).contains(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
                || byte == UInt8(ascii: ":")
        }

        static func isValidID(_ id: String) -> Bool {
            (1...64).contains(id.utf8.count) && id.utf8.allSatisfy(Self.isIDByte) && id != "." && id != ".."
        }
    }

    struct Access: Sendable {
        var tokens = APITokens(tokens: [])
        var allowAnonymous = false
        var signingKey: String?
        var linkTTLSeconds = 3600
        var metricsToken: String?
    }

    var http = HTTP()
    var access = Access()
    var database = Database()
    var cache = Cache()
    var exports = Exports()
    private(set) var cluster = Cluster()
    var logLevel = "info"

    /// A setting that is present but unusable; start-up stops with its message.
    struct Invalid: Error, CustomStringConvertible {
        let description: String

        init(key: String, value: String, expected: String) {
            self.description = "\(key)=\(value) is not valid: expected \(expected)"
        }

        /// For settings whose value must not be printed (tokens, keys).
        init(_ message: String) {
            self.description = message
        }
    }

    init() {}

    init(environment: [String: String]) throws(Invalid) {
        func int(_ key: String, _ range: ClosedRange<Int>) throws(Invalid) -> Int? {
            guard let text = environment[key], !text.isEmpty else { return nil }
            let digits = text.replacingOccurrences(of: "_", with: "")
            guard digits.utf8.count <= 18, let value = Int(digits), range.contains(value) else {
                throw Invalid(key: key, value: text, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
        func bytes(_ key: String, _ range: ClosedRange<Int>) throws(Invalid) -> Int? {
            guard let text = environment[key], !text.isEmpty else { return nil }
            guard let value = Self.byteCount(text), range.contains(value) else {
                throw Invalid(key: key, value: text, expected: "a number of bytes from \(range.lowerBound) to \(range.upperBound), optionally with K, M, G or T (powers of 1024)")
            }
            return value
        }
        if let url = environment["DATABASE_URL"] { self.database.url = url }
        if let host = environment["HOST"], !host.isEmpty { self.http.host = host }
        if let port = try int("PORT", 0...65535) { self.http.port = port }
        if let n = try int("MAX_CONNECTIONS", 1...1_000_000) { self.http.maxConnections = n }
        if let n = try int("REQUEST_HEADER_TIMEOUT", 1...3600) { self.http.requestHeaderTimeoutSeconds = n }
        if let n = try int("KEEP_ALIVE_TIMEOUT", 1...3600) { self.http.keepAliveTimeoutSeconds = n }
        if let n = try int("MAX_HEADER_BYTES", 1024...1_048_576) { self.http.maxHeaderBytes = n }
        if let n = try int("SEND_TIMEOUT", 1...3600) { self.http.sendTimeoutSeconds = n }
        if let n = try bytes("DOWNLOAD_BUFFER_BYTES", (256 << 10)...(64 << 30)) { self.http.downloadBufferBytes = n }
        if let n = try int("SHUTDOWN_GRACE", 0...3600) { self.http.shutdownGraceSeconds = n }
        if let n = try int("DATABASE_CONNECT_TIMEOUT", 2...3600) { self.database.connectTimeoutSeconds = n }
        if let n = try int("JOURNAL_STATEMENT_TIMEOUT", 1...3600) { self.database.journalStatementTimeoutSeconds = n }
        if let dir = environment["CACHE_DIR"], !dir.isEmpty { self.cache.directory = dir }
        if let rows = try int("SEED_ROWS", 0...2_000_000_000) { self.database.seedRows = rows }
        if let seed = try Self.boolean("SEED", environment) { self.database.seed = seed }
        if let fastStart = try Self.boolean("FAST_START", environment) { self.exports.fastStart = fastStart }
        if let n = try int("MAX_CONCURRENT_EXPORTS", 1...256) { self.exports.maxConcurrent = n }
        if let n = try int("EXPORT_PARALLELISM", 1...16) { self.exports.parallelism = n }
        if let n = try int("MAX_QUEUED_EXPORTS", 0...100_000) { self.exports.maxQueued = n }
        if let n = try int("MAX_EXPORTS", 1...10_000_000) { self.exports.maxExports = n }
        if let n = try int("TOKEN_MAX_ACTIVE_EXPORTS", 1...1_000_000) { self.exports.tokenMaxActive = n }
        if let n = try int("TOKEN_CREATES_PER_MINUTE", 0...1_000_000) { self.exports.tokenCreatesPerMinute = n }
        if let n = try int("TOKEN_CACHE_SHARE", 1...100) { self.cache.tokenSharePercent = n }
        if let n = try int("GZIP_LEVEL", 1...9) { self.exports.gzipLevel = n }
        if let n = try int("GZIP_WORKERS", 1...64) { self.exports.gzipWorkers = n }
        if let n = try int("GZIP_QUEUE", 0...10_000) { self.exports.gzipQueue = n }
        if let n = try int("CACHE_TTL", 0...31_536_000) { self.exports.cacheTTLSeconds = n }
        if let n = try int("EXPORT_TTL", 1...315_360_000) { self.exports.exportTTLSeconds = n }
        if let n = try bytes("CACHE_MAX_BYTES", 0...(1 << 60)) { self.cache.maxBytes = n }
        if let n = try int("RANGE_WAIT_SECONDS", 0...3600) { self.exports.rangeWaitSeconds = n }
        do {
            self.access.tokens = try APITokens.parse(list: environment["API_TOKENS"], file: environment["API_TOKENS_FILE"])
        } catch {
            throw Invalid(error.description)
        }
        if let allow = try Self.boolean("ALLOW_ANONYMOUS", environment) { self.access.allowAnonymous = allow }
        if let key = environment["SIGNING_KEY"], !key.isEmpty {
            guard key.utf8.count >= SigningKey.minimumLength else {
                throw Invalid("SIGNING_KEY must have at least \(SigningKey.minimumLength) bytes (e.g. `openssl rand -hex 32`)")
            }
            self.access.signingKey = key
        }
        if let n = try int("LINK_TTL", 1...31_536_000) { self.access.linkTTLSeconds = n }
        if let token = environment["METRICS_TOKEN"], !token.isEmpty {
            guard token.utf8.count >= APITokens.minimumLength, APITokens.isBearerToken(token) else {
                throw Invalid("METRICS_TOKEN must be \(APITokens.minimumLength) to 512 of A-Z a-z 0-9 - . _ ~ + / (then optional =)")
            }
            self.access.metricsToken = token
        }
        if self.access.tokens.isEmpty, !self.access.allowAnonymous, !Self.isLoopback(self.http.host) {
            throw Invalid(
                "HOST=\(self.http.host) is not a loopback address, and no API_TOKENS or API_TOKENS_FILE is set: anyone who can reach it could read every export. Set tokens, or ALLOW_ANONYMOUS=true to serve without authentication anyway"
            )
        }
        if let id = environment["INSTANCE_ID"], !id.isEmpty {
            guard Cluster.isValidID(id) else { throw Invalid(key: "INSTANCE_ID", value: id, expected: "1 to 64 of A-Z a-z 0-9 . _ - :, not . or ..") }
            self.setInstanceID(id)
        } else {
            self.setInstanceID(Cluster.defaultInstanceID(port: self.http.port))
        }
        if let n = try int("LEASE_SECONDS", 2...3600) { self.setLeaseSeconds(n) }
        if let level = environment["LOG_LEVEL"], !level.isEmpty {
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(level.lowercased()) else {
                throw Invalid(key: "LOG_LEVEL", value: level, expected: levels.joined(separator: ", "))
            }
            self.logLevel = level.lowercased()
        }
    }

    /// INSTANCE_ID, and the `application_name` of every connection with it.
    mutating func setInstanceID(_ id: String) {
        self.cluster.instanceID = id
        self.database.applicationName = "gateway:" + id
    }

    mutating func setLeaseSeconds(_ seconds: Int) {
        self.cluster.leaseSeconds = seconds
    }

    /// True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost.
    static func isLoopback(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered == "::1" || lowered == "[::1]" { return true }
        let parts = lowered.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { $0.utf8.count <= 3 && UInt8($0) != nil }
    }

    private static func boolean(_ key: String, _ environment: [String: String]) throws(Invalid) -> Bool? {
        guard let text = environment[key], !text.isEmpty else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw Invalid(key: key, value: text, expected: "true or false")
        }
    }

    /// `123`, `64K`, `500M`, `2G`, `1T` (powers of 1024); nil when malformed or too large.
    static func byteCount(_ text: String) -> Int? {
        let units: [UInt8: Int] = [UInt8(ascii: "K"): 1 << 10, UInt8(ascii: "M"): 1 << 20, UInt8(ascii: "G"): 1 << 30, UInt8(ascii: "T"): 1 << 40]
        var digits = Array(text.utf8).map { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") ? $0 - 32 : $0 }
        var unit = 1
        if let last = digits.last, let factor = units[last] {
            unit = factor
            digits.removeLast()
        }
        guard !digits.isEmpty, digits.count <= 15, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let n = Int(String(decoding: digits, as: UTF8.self))
        else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: unit)
        return overflow ? nil : product
    }

    /// The process environment over the `.env` file in `directory`, if any.
    static func load(directory: String = FileManager.default.currentDirectoryPath) throws(Invalid) -> Configuration {
        var merged = DotEnv.read(path: directory + "/.env")
        for (key, value) in ProcessInfo.processInfo.environment { merged[key] = value }
        return try Configuration(environment: merged)
    }
}

/// The few rules of `.env` files that matter here: `KEY=value` lines, `#`
/// comments, optional `export `, and values in single or double quotes.
enum DotEnv {
    static func read(path: String) -> [String: String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        return parse(text)
    }

    static func parse(_ text: String) -> [String: String] {
        var values: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = rawLine.trimmingSpaces()
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingSpaces() }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingSpaces()
            var value = line[line.index(after: equals)...].trimmingSpaces()
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            values[key] = value
        }
        return values
    }
}
