import Foundation
import NIOPosix
import Testing

@testable import Gateway

/// The gateway accepts a delimiter, quote and NULL marker exactly when
/// PostgreSQL accepts them as COPY options: drawn at random from pieces that
/// fool Character-based checks (combining marks, joiners, variation
/// selectors, a Greek question mark that Swift compares equal to `;`, CR LF,
/// quotes, delimiters, NUL) and bytes that are not UTF-8 at all.
///
/// One refusal is the gateway's own: a quote that is CR or LF, which
/// PostgreSQL takes but which makes a file no CSV reader can split.
///
/// Both directions are asked of PostgreSQL itself: when the gateway accepts,
/// the very COPY it would run (its own SQL, escaped by libpq, over no rows)
/// must succeed; when it refuses, the same options given as raw bytes must
/// fail.
struct ValidationPropertyTests {
    static let pieces: [[UInt8]] = [
        Array("a".utf8), Array("Z".utf8), Array("7".utf8), Array(",".utf8), Array(";".utf8), Array("|".utf8),
        Array("\"".utf8), Array("'".utf8), Array("\\".utf8), Array(".".utf8), Array(" ".utf8), Array("\t".utf8),
        Array("\r".utf8), Array("\n".utf8), Array("\r\n".utf8), [0x00], [0x01], [0x7F], Array("tab".utf8),
        [0xCC, 0x81],  // combining acute accent
        [0xE2, 0x80, 0x8D],  // zero-width joiner
        [0xEF, 0xB8, 0x8F],  // variation selector 16
        [0xCD, 0xBE],  // Greek question mark, canonically equivalent to ";"
        [0xE2, 0x84, 0xAA],  // Kelvin sign, canonically equivalent to "K"
        [0xC3, 0xA9],  // é
        [0xF0, 0x9F, 0x98, 0x80],  // an emoji
        [0xFF], [0xC3], [0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],  // not UTF-8
    ]

    /// A value of up to `maxPieces` pieces, often just one, or nil (the
    /// parameter absent), so that both acceptance and refusal are common.
    static func draw(_ rng: inout some RandomNumberGenerator, maxPieces: Int) -> [UInt8]? {
        let dice = Int.random(in: 0..<10, using: &rng)
        if dice < 3 { return nil }
        let count = dice < 8 ? 1 : Int.random(in: 0...maxPieces, using: &rng)
        var value: [UInt8] = []
        for _ in 0..<count { value += Self.pieces.randomElement(using: &rng) ?? [] }
        return value
    }

    static func percentEncoded(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%%%02X", $0) }.joined()
    }

    /// A PostgreSQL string literal of exactly these bytes (as PostgreSQL will
    /// judge them), whatever they are.
    static func literal(_ bytes: [UInt8]) -> String {
        "E'" + bytes.map { String(format: "\\x%02x", $0) }.joined() + "'"
    }

    /// The gateway's names for awkward characters, as the oracle must read them too.
    static func named(_ bytes: [UInt8]) -> [UInt8] {
        switch String(decoding: bytes, as: UTF8.self) {
        case "tab", "\\t": [9]
        case "space": [32]
        default: bytes
        }
    }

    @Test(.timeLimit(.minutes(2)))
    func gatewayAcceptsExactlyWhatPostgresAccepts() async throws {
        let server = try await Shared.server.get()
        let url = server.databaseURL
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SplitMix64(seed: seed)
        var cases: [(query: String, delimiter: [UInt8]?, quote: [UInt8]?, null: [UInt8]?)] = []
        for _ in 0..<2000 {
            let delimiter = Self.draw(&rng, maxPieces: 2)
            let quote = Self.draw(&rng, maxPieces: 2)
            let null = Self.draw(&rng, maxPieces: 5)
            var parts: [String] = []
            if let delimiter { parts.append("delimiter=" + Self.percentEncoded(delimiter)) }
            if let quote { parts.append("quoteChar=" + Self.percentEncoded(quote)) }
            if let null { parts.append("nullAs=" + Self.percentEncoded(null)) }
            cases.append((parts.joined(separator: "&"), delimiter, quote, null))
        }
        let drawn = cases
        let tally = try await NIOThreadPool.singleton.runIfActive { () -> (accepted: Int, refused: Int, mismatches: [String]) in
            let db = try PostgresConnection(url: url)
            defer { db.close() }
            func postgresAccepts(_ sql: String) -> Bool {
                do {
                    try db.copyOut(sql, onRow: { _ in }, onIdle: { .seconds(1) })
                    return true
                } catch {
                    return false
                }
            }
            var (accepted, refused, mismatches) = (0, 0, [String]())
            for c in drawn {
                let request = try? ExportRequest.parse(try QueryString.parse(c.query))
                let agrees: Bool
                if let request {
                    accepted += 1
                    // The gateway's own COPY, over an id range with no rows.
                    let sql = try ExportQuery(request: request).copy(literal: db.literal, ids: IDRange(from: 0, below: 1))
                    agrees = postgresAccepts(sql)
                } else if let q = c.quote, [[ASCII.cr], [ASCII.lf]].contains(Self.named(q)) {
                    // Refused by the gateway's own rule, though PostgreSQL takes it:
                    // a line break as the quote makes records no reader can split.
                    refused += 1
                    agrees = true
                } else {
                    refused += 1
                    var options = "FORMAT csv"
                    if let d = c.delimiter { options += ", DELIMITER " + Self.literal(Self.named(d)) }
                    if let q = c.quote { options += ", QUOTE " + Self.literal(Self.named(q)) }
                    if let n = c.null { options += ", NULL " + Self.literal(n) }
                    agrees = !postgresAccepts("COPY (SELECT 1 WHERE false) TO STDOUT WITH (\(options))")
                }
                if !agrees { mismatches.append("\(request == nil ? "refused" : "accepted") \(c.query)") }
            }
            return (accepted, refused, mismatches)
        }
        #expect(tally.mismatches.isEmpty, "seed \(seed): \(tally.mismatches.prefix(10))")
        // The draws reach both sides, or the test proves little.
        #expect(tally.accepted > 100 && tally.refused > 100, "accepted \(tally.accepted), refused \(tally.refused)")
    }

    @Test func aLongerNullMarkerThanTheBoundIsRefusedThoughPostgresWouldTakeIt() throws {
        let ok = "nullAs=" + String(repeating: "x", count: ExportRequest.maxNullBytes)
        #expect((try? ExportRequest.parse(try QueryString.parse(ok))) != nil)
        // 11 code points, 33 bytes: the bound is on bytes.
        let long = "nullAs=" + String(repeating: "%E2%82%AC", count: 11)
        #expect(throws: ParameterError.self) { try ExportRequest.parse(try QueryString.parse(long)) }
    }
}

/// A small seeded generator (SplitMix64), so a failing draw can be replayed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
