import Cache
import Foundation
import NIOCore
import Testing

@testable import Gateway

struct ExportRequestTests {
    func parse(_ query: String) throws -> ExportRequest {
        try ExportRequest.parse(try QueryString.parse(query))
    }

    @Test func defaultsAreAllColumnsCommaAndDoubleQuote() throws {
        let request = try self.parse("")
        #expect(request.columns == UsersTable.columns)
        #expect(request.delimiterText == "," && request.quoteText == "\"")
        #expect(request.minLifetimeValue == nil)
    }

    @Test func listsAreNormalisedAndMerged() throws {
        let request = try self.parse("country_code=us,%20De&subscription_tier=PRO&subscription_tier=free&min_ltv=0&columns=notes,id")
        #expect(request.countryCodes == ["US", "DE"])
        #expect(request.subscriptionTiers == ["pro", "free"])
        #expect(request.minLifetimeValue == "0")
        #expect(request.columns == ["notes", "id"])
    }

    @Test func namedAndEncodedDelimiters() throws {
        #expect(try self.parse("delimiter=tab").delimiterText == "\t")
        #expect(try self.parse("delimiter=%09").delimiterText == "\t")
        #expect(try self.parse("delimiter=%7C&quoteChar=%27").quoteText == "'")
    }

    @Test func decimalsThatNumericAccepts() {
        for good in ["0", "12", "99.95", "-1", "+3.5", "9999999999.99"] { #expect(ExportRequest.isDecimal(good), "\(good)") }
        for bad in ["", ".5", "5.", "1e3", "0x10", "1.2.3", "NaN", "12345678901", "1 ", "١٢"] { #expect(!ExportRequest.isDecimal(bad), "\(bad)") }
    }

    @Test func sqlQuotesEveryValueThroughTheEscaper() throws {
        let request = try self.parse("country_code=US&min_ltv=5&columns=id,email&delimiter=;")
        let sql = try ExportQuery(request: request).copy(literal: { "<\($0)>" })
        #expect(
            sql == "COPY (SELECT id, email FROM users WHERE country_code IN (<US>) AND lifetime_value >= <5>::numeric ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER <;>, QUOTE <\">)")
    }

    @Test func cacheKeyNormalisesWhatDoesNotChangeTheBytes() throws {
        let a = try self.parse("country_code=US,de&subscription_tier=pro&min_ltv=5")
        let b = try self.parse("subscription_tier=PRO&country_code=DE&country_code=us,US&min_ltv=%2B05.00")
        #expect(a.cacheKey == b.cacheKey)
        for different in ["country_code=US", "country_code=US,DE&subscription_tier=pro&min_ltv=5.01", "columns=id,email", "excel=true", "header=false"] {
            #expect(try self.parse(different).cacheKey != a.cacheKey, "\(different)")
        }
        #expect(try self.parse("columns=id,email").cacheKey != self.parse("columns=email,id").cacheKey, "column order is part of the bytes")
        #expect(ExportRequest.normalizedDecimal("-0.00") == "0")
        #expect(ExportRequest.normalizedDecimal("0010.500") == "10.5")
        #expect(ExportRequest.normalizedDecimal("-3") == "-3")
    }

    /// The journal stores `canonicalQuery` and parses it back after a restart.
    @Test(arguments: [
        "", "country_code=US,de&subscription_tier=pro&min_ltv=0&columns=notes,id&delimiter=%09&quoteChar=%27",
        "excel=true", "excel=true&bom=false", "excel=true&lineEnding=lf", "header=false&nullAs=%5CN&delimiter=%7C",
        "nullAs=%E2%80%94&bom=true&lineEnding=crlf", "delimiter=%26&quoteChar=%3D&columns=email",
    ])
    func canonicalQueryParsesBackToTheSameRequest(_ query: String) throws {
        let request = try self.parse(query)
        let again = try self.parse(request.canonicalQuery)
        #expect(again == request)
        #expect(again.cacheKey == request.cacheKey)
    }

    @Test func theHeadIsASmallFirstRangeAndTheRestIsOpen() throws {
        for (minID, maxID) in [(Int64(1), Int64(10_000_000)), (1, 3000), (-50, 50), (Int64.max - 5000, Int64.max)] {
            let (head, rest) = try #require(ExportPlan.head(minID: minID, maxID: maxID))
            #expect(head.from == nil && rest.below == nil, "open at both ends: ids the bounds missed are still read")
            let cut = try #require(head.below)
            #expect(rest.from == cut && cut > minID && cut <= maxID)
            #expect(cut - minID <= (maxID - cut) / 100 + 1)
        }
        #expect(ExportPlan.head(minID: 5, maxID: 5) == nil)
        #expect(ExportPlan.head(minID: nil, maxID: nil) == nil)
        #expect(ExportPlan.head(minID: Int64.min, maxID: Int64.max) == nil, "a span too wide to count is read whole")
        #expect(IDRange(from: nil, below: 10).condition == "id < 10")
        #expect(IDRange(from: 3, below: 10).condition == "id >= 3 AND id < 10")
        #expect(IDRange(from: 3, below: nil).condition == "id >= 3")
        #expect(IDRange(from: nil, below: nil).condition == nil)
    }

    /// Pieces are consecutive, non-empty, keep the range's own ends, and
    /// are balanced by the histogram when it has enough bounds inside.
    @Test func piecesCoverTheRangeInOrder() throws {
        let histogram = ExportPlan.histogram(fromText: "{" + stride(from: 1, through: 10_001, by: 100).map(String.init).joined(separator: ",") + "}")
        #expect(histogram.count == 101)
        let cases: [(IDRange, Int64, Int64, Int, [Int64])] = [
            (IDRange(from: 11, below: nil), 1, 10_000, 4, histogram),
            (IDRange(from: nil, below: nil), 1, 10_000, 3, []),
            (IDRange(from: 11, below: nil), 1, 10_000, 2, [1, 10_000]),
            (IDRange(from: 5000, below: nil), 1, 10_000, 4, histogram),
            (IDRange(from: -100, below: nil), -100, 7, 16, []),
            (IDRange(from: nil, below: nil), Int64.min, Int64.max, 4, []),
        ]
        for (range, minID, maxID, n, bounds) in cases {
            let pieces = ExportPlan.split(range, minID: minID, maxID: maxID, into: n, histogram: bounds)
            #expect(pieces.count >= 1 && pieces.count <= n)
            #expect(pieces.first?.from == range.from && pieces.last?.below == range.below)
            for (a, b) in zip(pieces, pieces.dropFirst()) {
                let cut = try #require(a.below)
                #expect(b.from == cut)
                #expect(cut > (a.from ?? minID), "no empty piece: \(pieces)")
            }
            if range.from == 11, n == 4, !bounds.isEmpty {
                // 100 buckets of 100 ids each: 4 pieces of about 2500.
                let sizes = pieces.map { ($0.below ?? 10_001) - ($0.from ?? 1) }
                #expect(sizes.allSatisfy { abs($0 - 2500) <= 110 }, "\(sizes)")
            }
        }
        #expect(ExportPlan.split(IDRange(from: 3, below: nil), minID: 1, maxID: 3, into: 4, histogram: []) == [IDRange(from: 3, below: nil)])
        #expect(ExportPlan.split(IDRange(from: nil, below: nil), minID: nil, maxID: nil, into: 4, histogram: []) == [IDRange(from: nil, below: nil)])
        #expect(ExportPlan.histogram(fromText: "{1,2,x}").isEmpty)
        #expect(ExportPlan.histogram(fromText: nil).isEmpty)
    }

    @Test func piecesAreSharedByTheRunningExports() {
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 1, estimatedRows: 10_000_000) == 4)
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 2, estimatedRows: 10_000_000) == 2)
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 9, estimatedRows: 10_000_000) == 1)
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 1, estimatedRows: 120_000) == 2, "50,000 rows a piece at least")
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 1, estimatedRows: 100) == 1)
        #expect(ExportPlan.pieceCount(parallelism: 4, runningExports: 1, estimatedRows: nil) == 1)
        #expect(ExportPlan.pieceCount(parallelism: 1, runningExports: 1, estimatedRows: 10_000_000) == 1)
    }

    @Test func planRowsAreReadFromExplain() {
        #expect(ExportQuery.estimatedRows(fromPlanLine: "Sort  (cost=1.0..2.0 rows=12345 width=100)") == 12345)
        #expect(ExportQuery.estimatedRows(fromPlanLine: "nonsense") == nil)
    }
}

struct HeaderParsingTests {
    @Test func rangesFollowRFC9110() {
        #expect(ByteRange.parse("bytes=0-9", size: 100) == .ranges([0...9]))
        #expect(ByteRange.parse("bytes=90-", size: 100) == .ranges([90...99]))
        #expect(ByteRange.parse("bytes=-10", size: 100) == .ranges([90...99]))
        #expect(ByteRange.parse("bytes=-1000", size: 100) == .ranges([0...99]))
        #expect(ByteRange.parse("bytes=50-1000", size: 100) == .ranges([50...99]))
        #expect(ByteRange.parse("Bytes=1-2 , 4-5", size: 100) == .ranges([1...2, 4...5]))
        #expect(ByteRange.parse("bytes=40-49,0-9,5-20,21-22", size: 100) == .ranges([0...22, 40...49]))
        #expect(ByteRange.parse("bytes=0-0,200-300", size: 100) == .ranges([0...0]))
        #expect(ByteRange.parse("bytes=100-", size: 100) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=-0", size: 100) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=0-", size: 0) == .unsatisfiable)
        // Positions too large for an Int are still valid positions (RFC 9110 has no bound): past the end.
        #expect(ByteRange.parse("bytes=99999999999999999999-", size: 100) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=10-99999999999999999999", size: 100) == .ranges([10...99]))
        let tooMany = "bytes=" + (0..<17).map { "\($0)-\($0)" }.joined(separator: ",")
        for ignored in [nil, "", "bytes=", "bytes = 1-2", "bytes=a-b", "bytes=5-1", "lines=1-2", "bytes=1-2,,4-5", tooMany] {
            #expect(ByteRange.parse(ignored, size: 100) == ByteRange.Resolution.none, "\(ignored ?? "nil")")
        }
        #expect(ByteRange.specs("bytes=5-9,-3,7-") == [.closed(5, 9), .suffix(3), .from(7)])
    }

    @Test func multipartFramingCountsEveryByte() {
        let multipart = MultipartByteRanges(ranges: [0...9, 20...29], size: 100, contentType: "text/csv")
        let body = multipart.partHeaders[0] + String(repeating: "a", count: 10) + multipart.partHeaders[1] + String(repeating: "b", count: 10) + multipart.closing
        #expect(multipart.length == body.utf8.count)
        #expect(multipart.partHeaders[1].hasPrefix("\r\n--\(multipart.boundary)\r\n"))
        #expect(multipart.closing == "\r\n--\(multipart.boundary)--\r\n")
    }

    @Test func acceptEncodingHonoursQValues() {
        #expect(AcceptEncoding.prefersGzip("gzip"))
        #expect(AcceptEncoding.prefersGzip("deflate, gzip, br, zstd"))
        #expect(AcceptEncoding.prefersGzip("*"))
        #expect(AcceptEncoding.prefersGzip("gzip;q=0.5, identity;q=0.1"))
        #expect(!AcceptEncoding.prefersGzip(nil))
        #expect(!AcceptEncoding.prefersGzip("identity"))
        #expect(!AcceptEncoding.prefersGzip("gzip;q=0"))
        #expect(!AcceptEncoding.prefersGzip("br"))
        #expect(!AcceptEncoding.prefersGzip("*;q=0, identity"))
        #expect(!AcceptEncoding.prefersGzip("gzip;q=0.5"), "identity (q=1 by default) is preferred")
    }

    @Test func queryStringDecodesStrictly() throws {
        let pairs = try QueryString.parse("a=1&b=x%2Cy&c=hello+world&d&e=%E2%9C%93")
        #expect(pairs.map(\.name) == ["a", "b", "c", "d", "e"])
        #expect(pairs.map(\.value) == ["1", "x,y", "hello world", "", "✓"])
        #expect(throws: ParameterError.self) { try QueryString.parse("a=%G1") }
        #expect(throws: ParameterError.self) { try QueryString.parse("a=%FF") }
    }

    @Test func dotEnvReadsTheCommonForms() {
        let values = DotEnv.parse("# comment\nPORT=9000\nexport HOST=0.0.0.0\nDATABASE_URL=\"postgresql://u@h/db?x=1\"\n\nBAD LINE\n")
        #expect(values == ["PORT": "9000", "HOST": "0.0.0.0", "DATABASE_URL": "postgresql://u@h/db?x=1"])
    }

    @Test func configurationRejectsBadValues() throws {
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["PORT": "http"]) }
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["MAX_CONCURRENT_EXPORTS": "0"]) }
        let configuration = try Configuration(environment: ["SEED_ROWS": "1_000", "MAX_QUEUED_EXPORTS": "3"])
        #expect(configuration.database.seedRows == 1000)
        #expect(configuration.exports.maxQueued == 3)
        #expect(configuration.http.port == 8080)
    }

    @Test func configurationBoundsHaveDefaultsAndParse() throws {
        let defaults = try Configuration(environment: [:])
        #expect(defaults.cache.maxBytes == nil, "unset: half the room, resolved at start")
        #expect(defaults.http.maxConnections == 1024 && defaults.http.downloadBufferBytes == 16 << 20)
        let set = try Configuration(environment: ["CACHE_MAX_BYTES": "0", "DOWNLOAD_BUFFER_BYTES": "8m", "SHUTDOWN_GRACE": "3", "MAX_EXPORTS": "10"])
        #expect(set.cache.maxBytes == 0 && set.http.downloadBufferBytes == 8 << 20 && set.http.shutdownGraceSeconds == 3 && set.exports.maxExports == 10)
        #expect(Configuration.byteCount("999999999999999T") == nil, "overflow is refused, not a trap")
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["DOWNLOAD_BUFFER_BYTES": "1K"]) }
        #expect(throws: Configuration.Invalid.self) { try Configuration(environment: ["PORT": "99999999999999999999999"]) }
    }
}

struct ConnectionTimeoutsTests {
    typealias Timeouts = ConnectionTimeouts<Int>

    func make() -> Timeouts { Timeouts(connectedAt: 0, header: { $0 + 10 }, keepAlive: { $0 + 15 }) }

    @Test func aHeadMustArriveWithinTheHeaderTimeoutOfConnecting() {
        let timeouts = self.make()
        #expect(timeouts.deadline == 10)
        #expect(!timeouts.isExpired(at: 9) && timeouts.isExpired(at: 10))
    }

    @Test func trickledBytesDoNotExtendTheDeadline() {
        var timeouts = self.make()
        for t in 1...9 { timeouts.bytesReceived(at: t) }
        #expect(timeouts.isExpired(at: 10), "slowloris is closed at the header deadline")
    }

    @Test func aRequestInFlightHasNoDeadlineThenKeepAliveThenHeaderAgain() {
        var timeouts = self.make()
        timeouts.headReceived()
        #expect(timeouts.deadline == nil && !timeouts.isExpired(at: 1000))
        timeouts.responseEnded(at: 100)
        #expect(timeouts.deadline == 115, "idle between requests: keep-alive")
        timeouts.bytesReceived(at: 110)
        #expect(timeouts.deadline == 120, "the next request has begun: header timeout from its first byte")
        timeouts.headReceived()
        timeouts.bytesReceived(at: 130)  // the rest of a body, or a pipelined request
        timeouts.responseEnded(at: 140)
        #expect(timeouts.deadline == 150, "bytes that came during the response are held to the header timeout")
    }
}

struct StateMachineTests {
    @Test func lifecycleRefusesEventsAfterItEnds() {
        var life = ExportLifecycle()
        let started = life.start(at: Date())
        let cancel = life.cancel(at: Date())
        let completed = life.complete(.init(path: "/x", size: 1, sha256: "ab"), at: Date())
        let failed = life.fail("late", at: Date())
        #expect(started && !completed && !failed)
        #expect(cancel == .stopWorker)
        #expect(life.status == .cancelled)
        let again = life.cancel(at: Date())
        #expect(again == .alreadyEnded(.cancelled))

        var queued = ExportLifecycle()
        let queuedCancel = queued.cancel(at: Date())
        let lateStart = queued.start(at: Date())
        #expect(queuedCancel == .removeFromQueue && !lateStart)
    }

    /// Every event in every state: a sequence of any three never traps, an
    /// ended life never changes, and an interrupted one never starts or fails.
    @Test func everyEventIsDefinedInEveryState() {
        let file = PublishedFile(path: "/x", size: 1, sha256: "ab")
        let events: [(String, (inout ExportLifecycle) -> Void)] = [
            ("start", { _ = $0.start(at: Date()) }), ("complete", { _ = $0.complete(file, at: Date()) }),
            ("fail", { _ = $0.fail("x", at: Date()) }), ("cancel", { _ = $0.cancel(at: Date()) }), ("interrupt", { _ = $0.interrupt() }),
        ]
        for a in events {
            for b in events {
                for c in events {
                    var life = ExportLifecycle()
                    for (name, event) in [a, b, c] {
                        let before = life.status
                        let wasInterrupted = life.interrupted
                        event(&life)
                        if [.completed, .failed, .cancelled].contains(before) {
                            #expect(life.status == before, "\(a.0) \(b.0) \(c.0): \(name) changed an ended life")
                        }
                        if wasInterrupted, name == "start" || name == "fail" {
                            #expect(life.status == before, "an interrupted run neither starts nor fails")
                        }
                    }
                }
            }
        }
    }

    @Test func anInterruptedRunStaysQueuedOrRunningForTheJournal() {
        var queued = ExportLifecycle()
        #expect(queued.interrupt() == .removeFromQueue)
        #expect(queued.status == .queued && queued.interrupted)
        var running = ExportLifecycle()
        _ = running.start(at: Date())
        #expect(running.interrupt() == .stopWorker)
        #expect(running.status == .running)
        #expect(running.interrupt() == .alreadyEnded(.running), "twice changes nothing")
    }
}

struct GzipStreamTests {
    /// The gzip form must be a pure function of the CSV: after a restart it
    /// is made again, and a client resuming with Range splices the two. So
    /// the bytes must not depend on how the input arrives (the reader's
    /// chunks follow the export's timing), only on where it is flushed.
    @Test func outputDependsOnTheInputAndFlushPointsNotOnChunking() throws {
        var text = ""
        for i in 0..<40_000 { text += "\(i),user\(i * 7919 % 1000)@example.com,\"Name, \(i % 97)\",\(i % 13 == 0 ? "" : "note \(i)")\n" }
        let input = Array(text.utf8)
        var outputs: [[UInt8]] = []
        for seed in 0..<4 {
            var rng = SplitMix64(seed: UInt64(seed))
            let producer = try DeterministicGzip(level: 6, flushInterval: 64 * 1024)
            var output: [UInt8] = []
            var offset = 0
            while offset < input.count {
                let size = seed == 0 ? 4096 : Int.random(in: 1...200_000, using: &rng)
                let end = min(input.count, offset + size)
                for buffer in try producer.compress(ByteBuffer(bytes: input[offset..<end])) { output += buffer.readableBytesView }
                offset = end
            }
            for buffer in try producer.finish() { output += buffer.readableBytesView }
            outputs.append(output)
        }
        #expect(Set(outputs).count == 1, "every chunking gives the same bytes")
    }

    /// What a live gzip reader has received after a flush decompresses to
    /// everything given so far, even though the stream is not finished.
    @Test func flushMakesEverythingSoFarDecompressible() async throws {
        let stream = try GzipStream()
        let text = String(repeating: "id,name\n1,\"Zoë, Jr.\"\n", count: 200)
        var received = [UInt8]()
        for buffer in [try stream.compress(ByteBuffer(string: text))] + (try stream.flush()) {
            received += buffer.readableBytesView
        }
        #expect(try stream.flush().isEmpty, "nothing new, nothing to flush")
        let path = NSTemporaryDirectory() + "partial-\(UUID().uuidString).gz"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(received).write(to: URL(fileURLWithPath: path))
        let script = "import sys, zlib; d = zlib.decompressobj(31); sys.stdout.buffer.write(d.decompress(open(sys.argv[1], 'rb').read()))"
        let result = try await run("python3", ["-c", script, path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.text == text)

        var whole = received
        for buffer in try stream.finish() { whole += buffer.readableBytesView }
        try Data(whole).write(to: URL(fileURLWithPath: path))
        #expect(try await run("gzip", ["-dc", path]).text == text)
    }
}

struct PostgresErrorTests {
    /// The lines after a server message's first quote SQL (with filter values) or row data: never kept for the log.
    @Test func detailsKeepOnlyTheMessagesFirstLine() {
        let error = PostgresError.queryFailed(
            sqlState: "XX000", "ERROR:  something failed\nLINE 1: EXPLAIN SELECT id FROM users WHERE country_code IN ('JP')\n                ^\nDETAIL:  Key (email)=(user1@example.com)")
        #expect(error.details == "[XX000] ERROR:  something failed")
        let enumValue = PostgresError.queryFailed(sqlState: "22P02", "ERROR:  invalid input value for enum cc: \"ZQ\"")
        #expect(enumValue.details == "[22P02] ERROR:  invalid input value for enum cc: \"…\"")
        #expect(PostgresError.connectionFailed("FATAL:  no \"open").details == "FATAL:  no \"…")
    }
}
