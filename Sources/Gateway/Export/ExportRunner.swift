import Cache
import Logging

/// Runs one export on the calling thread, a worker of `ExportManager`'s pool:
/// a COPY read with libpq, written to a partial file in the store, published
/// under its SHA-256 on success, removed on failure, cancel or shutdown.
/// A cancel or a shutdown may land between any two steps (connect, EXPLAIN,
/// the file's creation, each COPY, the seal, the publish): each step looks
/// before it starts, a running query is cancelled by the manager, and the
/// lifecycle refuses a completion that comes after a cancel.
///
/// Everything here blocks; that is why it has threads of its own. The file
/// write is the backpressure: a slow disk slows the read from PostgreSQL
/// rather than filling memory, and readers follow the file, not this loop.
///
/// Room for a later step: one export from several COPYs over id ranges in
/// parallel under one exported snapshot, stitched in order; the file writer
/// and progress reporting here do not assume a single COPY.
struct ExportRunner: Sendable {
    let database: PostgresSettings
    let store: ContentStore
    let journal: ExportJournal
    let logger: Logger
    /// FAST_START: a sorting plan is read as a small head, then the rest.
    var fastStart = true
    /// How much to gather before writing; also the most a reader can lag
    /// behind what PostgreSQL has sent while rows are flowing.
    static let stagingSize = 256 * 1024
    /// An idle moment flushes once this much is staged (see `idle` in `run`) …
    static let idleFlushBytes = 64 * 1024
    /// … or once the oldest staged bytes have waited this long.
    static let idleFlushDelay: Duration = .milliseconds(5)

    enum Outcome {
        case completed(PublishedFile)
        /// Published, but cancelled in the meantime: the run's hold on the file may be the last.
        case publishedAfterCancel(PublishedFile)
        case failed
        case cancelled
        /// Stopped by a shutdown: nothing journaled, it runs again on the next start.
        case interrupted
    }

    /// Where the runner's file goes: room under CACHE_MAX_BYTES, the publish
    /// itself, and word that a partial file was discarded. The manager
    /// provides them (`ExportManager+Cache.swift`).
    struct Storage {
        /// Room for n more bytes; when it says no, the export fails cleanly
        /// as if the disk were full.
        var reserve: (Int) -> Bool = { _ in true }
        /// Names a sealed file in `objects/`, in order with every other
        /// change there.
        var install: (SealedFile) throws -> PublishedFile
        /// The partial file was removed without being published.
        var discarded: () -> Void = {}
    }

    func run(_ run: ExportRun, storage: Storage) -> Outcome {
        guard run.markRunning() else { return run.isInterrupted ? .interrupted : .cancelled }
        var logger = self.logger
        logger[metadataKey: LogKey.runID] = "\(run.id.uuidString.lowercased())"
        self.journal(run, logger: logger)
        var writer: CacheWriter?
        do {
            let db = try PostgresConnection(self.database)
            defer { db.close() }
            // Stops within a second of a cancel or a shutdown, even when the
            // cancel cannot reach the server.
            db.abandonWhen = { run.shouldStop }
            guard run.attach(db.makeCanceller()) else { return run.isInterrupted ? .interrupted : .cancelled }
            let query = ExportQuery(request: run.request)
            let plan = try db.execute(try query.explain(literal: db.literal))
            let topLine = (plan.first?.first ?? nil) ?? ""
            if let estimate = ExportQuery.estimatedRows(fromPlanLine: topLine) {
                run.setEstimate(rows: estimate)
            }
            let fileWriter = try self.store.createWriter(suffix: ".csv")
            writer = fileWriter
            run.csv.begin(path: fileWriter.partialPath)
            logger.debug("export started", metadata: [LogKey.backendPID: "\(db.backendPID)"])

            let staging = StagingBuffer(capacity: Self.stagingSize)
            let options = run.request.options
            if options.byteOrderMark { _ = CSVOptions.utf8BOM.withUnsafeBytes { staging.append($0) } }
            // Records are counted from the messages; with a header the first one is not a record.
            let headerMessages = options.header ? 1 : 0
            var messages = 0
            let clock = ContinuousClock()
            // When the bytes now staged were first seen waiting for an idle flush.
            var stagedSince: ContinuousClock.Instant?
            func flush() throws {
                if run.shouldStop { throw CacheError.cancelled() }
                stagedSince = nil
                guard !staging.isEmpty else { return }
                guard storage.reserve(staging.count) else { throw CacheError.cacheFull() }
                try fileWriter.write(staging.bytes)
                staging.removeAll()
                run.recordProgress(rows: max(0, messages - headerMessages), bytes: fileWriter.length)
            }
            // The socket has nothing right now. Flushing at every such moment
            // wrote 8.5 KB at a time on average (155,000 writes, and as many
            // wake-ups of every live reader, for the 1.3 GB export; streaming
            // it cost 9 s of CPU against 4 s without a reader). So an idle
            // moment flushes only once 64 KiB are staged or the oldest staged
            // bytes have waited 5 ms: readers still see rows within 5 ms.
            func idle() throws -> Duration {
                if run.shouldStop { throw CacheError.cancelled() }
                guard !staging.isEmpty else { return .seconds(1) }
                let now = clock.now
                let since = stagedSince ?? now
                stagedSince = since
                if staging.count >= Self.idleFlushBytes || now - since >= Self.idleFlushDelay {
                    try flush()
                    return .seconds(1)
                }
                return Self.idleFlushDelay - (now - since)
            }
            func append(_ bytes: UnsafeRawBufferPointer) throws {
                if staging.append(bytes) { return }
                try flush()
                if !staging.append(bytes) {
                    guard storage.reserve(bytes.count) else { throw CacheError.cacheFull() }
                    try fileWriter.write(bytes)
                }
            }
            // One snapshot for every segment: together they are one consistent export.
            try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            var segments: [ClosedRange<Int64>?] = [nil]
            if self.fastStart, !ExportQuery.planStreams(topLine) {
                let bounds = try db.execute("SELECT min(id), max(id) FROM users")
                segments = ExportQuery.segments(minID: bounds.first?[0].flatMap { Int64($0) }, maxID: bounds.first?[1].flatMap { Int64($0) })
            }
            for (index, ids) in segments.enumerated() {
                // A cancel between two statements finds no query to stop: look before each.
                if run.shouldStop { throw CacheError.cancelled() }
                let sql = try query.copy(literal: db.literal, header: options.header && index == 0, ids: ids)
                try db.copyOut(sql, onRow: { row in
                    // One CopyData message is one CSV record (or the header), ending in LF.
                    messages += 1
                    if options.crlf, row.last == UInt8(ascii: "\n") {
                        try append(UnsafeRawBufferPointer(rebasing: row.dropLast()))
                        try Self.crlf.withUnsafeBytes { try append($0) }
                    } else {
                        try append(row)
                    }
                }, onIdle: idle)
                try flush()
            }
            try db.execute("COMMIT")
            let rows = max(0, messages - headerMessages)
            if run.shouldStop { throw CacheError.cancelled() }
            let sealed = try fileWriter.seal()
            writer = nil
            let published: PublishedFile
            do {
                published = try storage.install(sealed)
            } catch {
                // Not installed (the pool stopped, or the run went): the sealed file goes.
                self.store.discard(sealed)
                storage.discarded()
                throw error
            }
            guard run.complete(published, rows: rows) else { return .publishedAfterCancel(published) }
            self.journal(run, logger: logger)
            logger.info("export completed", metadata: [LogKey.rows: "\(rows)", LogKey.bytes: "\(published.size)", LogKey.sha256: "\(published.sha256)"])
            return .completed(published)
        } catch {
            if let writer {
                writer.discard()
                storage.discarded()
            }
            if run.isInterrupted {
                logger.info("export interrupted by the shutdown; it runs again on the next start")
                return .interrupted
            }
            if run.status == .cancelled {
                logger.info("export cancelled")
                return .cancelled
            }
            logger.error("export failed", metadata: ["error": "\(error)", "error.details": "\(Self.details(of: error))"])
            run.fail(error)
            self.journal(run, logger: logger)
            return .failed
        }
    }

    /// Journals the run's new state. Not an acknowledgement: if the journal
    /// is down, a restart runs the export again (same bytes), so a failure is
    /// logged (by the journal) and the export goes on.
    private func journal(_ run: ExportRun, logger: Logger) {
        do {
            try self.journal.update(run)
        } catch {
            logger.warning("the run's state was not journaled; a restart would run it again")
        }
    }

    private static let crlf: [UInt8] = [UInt8(ascii: "\r"), UInt8(ascii: "\n")]

    private static func details(of error: any Error) -> String {
        switch error {
        case let error as PostgresError: error.details
        case let error as CacheError: error.details
        default: "\(error)"
        }
    }
}
