import Foundation

/// The gateway's settings, read from the environment and a `.env` file.
///
/// Every key, with its default (`.env.example` lists the same):
/// - `DATABASE_URL`: libpq connection URI or string. Default: empty, which
///   means libpq's own defaults (`PGHOST`, `PGPORT`, `PGUSER`, … or the local socket).
/// - `HOST`: address to listen on. Default `127.0.0.1`.
/// - `PORT`: TCP port. Default `8080`.
/// - `CACHE_DIR`: where finished and partial export files live. Default `./.cache/exports`.
/// - `SEED_ROWS`: rows to seed when `users` is missing or empty. Default `10000000`.
/// - `SEED`: `false` skips the seeding step entirely. Default `true`.
/// - `MAX_CONCURRENT_EXPORTS`: worker threads, i.e. COPYs at once. Default `2`.
/// - `MAX_QUEUED_EXPORTS`: exports that may wait for a worker; beyond it, 429. Default `100`.
/// - `EXPORT_TTL`: seconds an export lives after it was asked for; then 410 Gone. Default `86400`.
/// - `CACHE_MAX_BYTES`: bytes the cache may hold (suffixes K, M, G, T); `0` is no bound. Default `0`.
///   Past it, least recently used files that no export needs are evicted; when none
///   can be, new exports get 507 and a running one fails cleanly.
/// - `CACHE_TTL`: seconds a completed export's file is reused for an identical request. Default `600`.
/// - `FAST_START`: when PostgreSQL's plan for an export sorts its rows, read a small
///   head of the ids first so the first bytes come at once (`ExportQuery.segments`). Default `true`.
/// - `GZIP_LEVEL`: zlib level (1 fastest … 9 smallest) of the one gzip form made per export. Default `6`.
/// - `RANGE_WAIT_SECONDS`: how long a Range request on a running export waits for its bytes
///   (or for the end) before it is answered with the whole live file. Default `15`.
/// - `LOG_LEVEL`: trace, debug, info, notice, warning, error, critical. Default `info`.
///
/// The environment wins over `.env`; `.env` is read from the working directory.
struct Configuration: Sendable {
    struct HTTP: Sendable {
        var host = "127.0.0.1"
        var port = 8080
    }

    struct Database: Sendable {
        var url = ""
        var seedRows = 10_000_000
        var seed = true
    }

    struct Cache: Sendable {
        var directory = "./.cache/exports"
    }

    struct Exports: Sendable {
        var maxConcurrent = 2
        var maxQueued = 100
        var gzipLevel = 6
        var cacheTTLSeconds = 600
        var exportTTLSeconds = 86_400
        var cacheMaxBytes = 0
        var fastStart = true
        var rangeWaitSeconds = 15
    }

    var http = HTTP()
    var database = Database()
    var cache = Cache()
    var exports = Exports()
    var logLevel = "info"

    /// A setting that is present but unusable; start-up stops with its message.
    struct Invalid: Error, CustomStringConvertible {
        let key: String
        let value: String
        let expected: String
        var description: String { "\(key)=\(value) is not valid: expected \(expected)" }
    }


    init() {}

    init(environment: [String: String]) throws(Invalid) {
        func int(_ key: String, _ range: ClosedRange<Int>) throws(Invalid) -> Int? {
            guard let text = environment[key], !text.isEmpty else { return nil }
            let digits = text.replacingOccurrences(of: "_", with: "")
            guard let value = Int(digits), range.contains(value) else {
                throw Invalid(key: key, value: text, expected: "a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
        if let url = environment["DATABASE_URL"] { self.database.url = url }
        if let host = environment["HOST"], !host.isEmpty { self.http.host = host }
        if let port = try int("PORT", 0...65535) { self.http.port = port }
        if let dir = environment["CACHE_DIR"], !dir.isEmpty { self.cache.directory = dir }
        if let rows = try int("SEED_ROWS", 0...2_000_000_000) { self.database.seedRows = rows }
        if let seed = try Self.boolean("SEED", environment) { self.database.seed = seed }
        if let fastStart = try Self.boolean("FAST_START", environment) { self.exports.fastStart = fastStart }
        if let n = try int("MAX_CONCURRENT_EXPORTS", 1...256) { self.exports.maxConcurrent = n }
        if let n = try int("MAX_QUEUED_EXPORTS", 0...100_000) { self.exports.maxQueued = n }
        if let n = try int("GZIP_LEVEL", 1...9) { self.exports.gzipLevel = n }
        if let n = try int("CACHE_TTL", 0...31_536_000) { self.exports.cacheTTLSeconds = n }
        if let n = try int("EXPORT_TTL", 1...315_360_000) { self.exports.exportTTLSeconds = n }
        if let text = environment["CACHE_MAX_BYTES"], !text.isEmpty {
            guard let bytes = Self.byteCount(text) else {
                throw Invalid(key: "CACHE_MAX_BYTES", value: text, expected: "a number of bytes, optionally with K, M, G or T (powers of 1024)")
            }
            self.exports.cacheMaxBytes = bytes
        }
        if let n = try int("RANGE_WAIT_SECONDS", 0...3600) { self.exports.rangeWaitSeconds = n }
        if let level = environment["LOG_LEVEL"], !level.isEmpty {
            let levels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
            guard levels.contains(level.lowercased()) else {
                throw Invalid(key: "LOG_LEVEL", value: level, expected: levels.joined(separator: ", "))
            }
            self.logLevel = level.lowercased()
        }
    }

    private static func boolean(_ key: String, _ environment: [String: String]) throws(Invalid) -> Bool? {
        guard let text = environment[key], !text.isEmpty else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw Invalid(key: key, value: text, expected: "true or false")
        }
    }

    /// `123`, `64K`, `500M`, `2G`, `1T` (powers of 1024).
    static func byteCount(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text.uppercased())
        var unit = 1
        if let last = digits.last, let factor = units[last] {
            unit = factor
            digits = digits.dropFirst(0).dropLast()
        }
        guard !digits.isEmpty, digits.count <= 15, digits.allSatisfy(\.isNumber), let n = Int(digits) else { return nil }
        return n * unit
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
