import Cache
import Foundation
import Logging
import NIOPosix

/// Runs one export on the calling thread, a worker of `ExportManager`'s pool:
/// COPYs read with libpq, written to a partial file in the store, published
/// under its SHA-256 on success, removed on failure, cancel or shutdown.
///
/// **Parallel export.** As `pg_dump -j` does, the export's connection opens
/// a `REPEATABLE READ` transaction and exports its snapshot; the ids are
/// cut into ranges (`ExportPlan`); the first range is read by this
/// connection straight into the export's file (live readers follow it as
/// before), each later one by a connection of its own that imports the
/// snapshot, into a spool file on disk. Once the first range is in, each
/// spool is copied into the file in order, while its writer may still be
/// filling it. The file's bytes, its SHA-256 (computed while writing, in
/// order), its progress and its publish are those of one COPY of the whole.
/// A failed piece fails the export; a cancel, a failure or a shutdown stops
/// every piece, and this thread waits for all of them before it returns.
/// A cancel or a shutdown may land between any two steps (connect, EXPLAIN,
/// the file's creation, each COPY, the seal, the publish): each step looks
/// before it starts, a running query is cancelled by the manager, and the
/// lifecycle refuses a completion that comes after a cancel.
///
/// Everything here blocks; that is why it has threads of its own. The file
/// write is the backpressure: a slow disk slows the read from PostgreSQL
/// rather than filling memory, and readers follow the file, not this loop.
struct ExportRunner: Sendable {
    /// Where export connections come from, and go back to after a clean end.
    let connections: PostgresConnectionPool
    let store: ContentStore
    let logger: Logger
    /// FAST_START: the first 1/1024 of the ids is read first (`ExportPlan.head`).
    var fastStart = true
    /// EXPORT_PARALLELISM: COPYs at most for one export (`ExportPlan.pieceCount`).
    var parallelism = 1
    /// Fewer rows than this a piece (by the planner's estimate) are not worth a piece.
    var minRowsPerPiece = ExportPlan.minRowsPerPiece
    /// Threads for the later pieces of parallel exports (`ExportWorkers`);
    /// nil with EXPORT_PARALLELISM=1, when no piece is ever asked for.
    var pieceThreads: NIOThreadPool?
    /// Exports running on this gateway now, this one included: with more,
    /// each takes fewer pieces (`ExportPlan.pieceCount`).
    var runningExports = RunCounter()
    /// What a later piece reads at once from its spool file into the export's.
    static let stitchBlock = 1 << 20

    enum Outcome {
        case completed(PublishedFile)
        /// Published, but cancelled in the meantime: the run's hold on the file may be the last.
        case publishedAfterCancel(PublishedFile)
        /// Failed, with the client-safe message; the run is not failed yet
        /// (`ExportWorkers.settle` decides with the shared queue).
        case failed(message: String)
        case cancelled
        /// Stopped by a shutdown or by the loss of its claim: it runs again (here or elsewhere).
        case interrupted
    }

    /// Runs `run` to its end, its files going through `storage`.
    func run(_ run: ExportRun, storage: some ExportStorage) -> Outcome {
        guard run.markRunning() else { return run.isInterrupted ? .interrupted : .cancelled }
        var logger = self.logger
        logger[metadataKey: LogKey.runID] = "\(run.id.uuidString.lowercased())"
        var writer: CacheWriter?
        var leader: PostgresConnection?
        let group = PieceGroup()
        var pieces: [ExportPiece] = []
        do {
            let started = ContinuousClock.now
            let query = ExportQuery(request: run.request)
            let options = run.request.options
            // One snapshot for every COPY of the export: together they are
            // one consistent export. It is exported only when other
            // connections may join it.
            let snapshotCall = self.parallelism > 1 ? "pg_export_snapshot()" : "NULL"
            let (db, canceller, first) = try self.begin(
                run,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT \(snapshotCall) AS snapshot, (SELECT min(id) FROM users) AS min_id, (SELECT max(id) FROM users) AS max_id",
                stop: { run.shouldStop }
            )
            leader = db
            let row = ResultRow.rows(of: first).first
            let snapshot = row?.text("snapshot")
            let minID = row?.int64("min_id")
            let maxID = row?.int64("max_id")

            let fileWriter = try self.store.createWriter(suffix: ".csv", name: storage.partialName)
            writer = fileWriter
            run.csv.begin(path: fileWriter.partialPath)
            // Records are counted from the messages; with a header the first
            // one is not a record. What the status shows is what is in the
            // file: the leader's own records, and those of the spools
            // copied in so far.
            let headerMessages = options.header ? 1 : 0
            let rows = RowCounter()
            var stitchedRecords = 0
            let progress = { run.recordProgress(rows: max(0, rows.value + stitchedRecords - headerMessages), bytes: fileWriter.length) }
            let copier = CopyPiece(
                crlf: options.crlf, rows: rows,
                write: { bytes, _ in try fileWriter.write(bytes) }, reserve: { storage.reserve($0, spool: nil) },
                shouldStop: { run.shouldStop }, written: progress
            )
            if options.byteOrderMark { try copier.stage(CSVOptions.utf8BOM) }

            var header = options.header
            var rest = IDRange(from: nil, below: nil)
            if self.fastStart, let (head, tail) = ExportPlan.head(minID: minID, maxID: maxID) {
                try copier.copy(try query.copy(literal: db.literal, header: header, ids: head), on: db)
                try copier.flush()
                header = false
                rest = tail
                logger.debug("head written", metadata: [LogKey.exportHeadMilliseconds: "\((ContinuousClock.now - started).logMilliseconds)"])
            }
            let plan = try db.execute(try query.explain(literal: db.literal))
            let estimate = ExportQuery.estimatedRows(fromPlanLine: (plan.first?.first ?? nil) ?? "")
            if let estimate { run.setEstimate(rows: estimate) }

            let count =
                snapshot == nil ? 1 : ExportPlan.pieceCount(parallelism: self.parallelism, runningExports: self.runningExports.current, estimatedRows: estimate, minRowsPerPiece: self.minRowsPerPiece)
            var ranges = [rest]
            if count > 1 {
                let stats = try db.execute("SELECT histogram_bounds::text FROM pg_stats WHERE tablename = 'users' AND attname = 'id' AND schemaname = ANY (current_schemas(false))")
                let histogram = ExportPlan.histogram(fromText: stats.first?.first ?? nil)
                ranges = ExportPlan.split(rest, minID: minID, maxID: maxID, into: count, histogram: histogram)
            }
            run.pieces = ranges.count
            if let snapshot, ranges.count > 1 {
                for ids in ranges.dropFirst() {
                    // Everything that can throw comes before `enter`: a piece
                    // entered must be started, or `waitForAll` would wait for ever.
                    let sql = try query.copy(literal: db.literal, header: false, ids: ids)
                    let piece = ExportPiece(ids: ids, spool: try SpoolFile(store: self.store, suffix: ".csv"))
                    pieces.append(piece)
                    group.enter()
                    self.startPiece { active in
                        defer { group.leave() }
                        self.readPiece(piece, sql: sql, snapshot: snapshot, run: run, group: group, active: active, storage: storage)
                    }
                }
            }
            logger.debug("export started", metadata: [LogKey.backendPID: "\(db.backendPID)", LogKey.exportPieces: "\(ranges.map(\.description))"])
            try copier.copy(try query.copy(literal: db.literal, header: header, ids: ranges[0]), on: db)
            try copier.flush()
            // The later pieces, in order, each as soon as the one before is in.
            if !pieces.isEmpty {
                let block = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.stitchBlock, alignment: 16)
                defer { block.deallocate() }
                for piece in pieces {
                    do {
                        try piece.stitch(into: fileWriter, block: block, run: run, storage: storage) { records in
                            run.recordStitched(records)
                            stitchedRecords += records
                            progress()
                        }
                    } catch  where piece.spool.failedEmpty && !run.shouldStop {
                        // The piece could not start (no connection to be had,
                        // or its lock would have waited behind a statement that
                        // waits for this export: a deadlock PostgreSQL cannot
                        // see). Nothing of it is in the file: this connection,
                        // which holds the lock and the snapshot, reads the range.
                        logger.notice("a piece could not start; the export's own connection reads its range", metadata: ["error": "\(ErrorText.details(error))", LogKey.exportRange: "\(piece.ids)"])
                        try copier.copy(try query.copy(literal: db.literal, header: false, ids: piece.ids), on: db)
                        try copier.flush()
                    }
                    // Its writer has finished with it: its bytes are in the export's file now.
                    piece.spool.discard()
                    storage.discarded(spool: piece.reservation)
                }
                group.waitForAll()
            }
            self.end(db, canceller: canceller, of: run)
            leader = nil
            let total = max(0, rows.value + stitchedRecords - headerMessages)
            if run.shouldStop { throw CacheError.cancelled() }
            let sealed = try fileWriter.seal()
            writer = nil
            let published: PublishedFile
            do {
                published = try storage.publish(sealed, rows: total)
            } catch {
                // Not installed (the pool stopped, or the run went): the sealed file goes.
                self.store.discard(sealed)
                storage.discarded(spool: nil)
                throw error
            }
            guard run.complete(published, rows: total) else { return .publishedAfterCancel(published) }
            logger.info(
                "export completed",
                metadata: [
                    LogKey.rows: "\(total)", LogKey.bytes: "\(published.size)", LogKey.sha256: "\(published.sha256)",
                    LogKey.exportPieces: "\(ranges.count)", LogKey.exportMilliseconds: "\((ContinuousClock.now - started).logMilliseconds)",
                ])
            return .completed(published)
        } catch {
            // The later pieces stop within a second (they look at every
            // write, and the connection's wait looks every second); none
            // outlives this export or its spool file.
            group.stop()
            group.waitForAll()
            for piece in pieces {
                piece.spool.discard()
                storage.discarded(spool: piece.reservation)
            }
            leader?.close()
            if let writer {
                writer.discard()
                storage.discarded(spool: nil)
            }
            if run.isInterrupted {
                logger.info("export interrupted (a shutdown, or its claim was lost); it runs again")
                return .interrupted
            }
            if run.status == .cancelled {
                logger.info("export cancelled")
                return .cancelled
            }
            logger.error("export failed", metadata: ["error": "\(error)", "error.details": "\(ErrorText.details(error))"])
            // Not failed here yet: `ExportWorkers` fails it once the shared
            // queue says this attempt still held the run (a gateway frozen
            // past its lease fails for that, while another attempt runs).
            return .failed(message: ErrorText.forClient(error, otherwise: "the export failed"))
        }
    }

    /// A connection (a kept one if there is) with its canceller attached to
    /// the run (and returned, to take it back before the connection is kept
    /// for another export), and `sql` run on it. Attached first, so a cancel
    /// reaches a statement that waits (on a lock, say).
    private func begin(_ run: ExportRun, _ sql: String, stop: @escaping () -> Bool) throws -> (PostgresConnection, PostgresCanceller?, PostgresConnection.QueryResult) {
        let db = try self.connections.connect()
        let canceller = db.makeCanceller()
        guard run.attach(canceller) else {
            db.close()
            throw CacheError.cancelled()
        }
        do {
            db.abandonWhen = stop
            return (db, canceller, try db.query(sql))
        } catch {
            db.close()
            throw error
        }
    }

    /// Ends a connection's transaction after its COPYs succeeded and keeps
    /// the connection for the next export, or closes it. Read only:
    /// everything was read under the snapshot, so a failed commit loses
    /// nothing; the connection is just not kept. Nor is one whose canceller
    /// a cancel or a shutdown may already hold (`ExportRun.detach`).
    private func end(_ db: PostgresConnection, canceller: PostgresCanceller?, of run: ExportRun) {
        if (try? db.execute("COMMIT")) != nil, run.detach(canceller) {
            self.connections.checkIn(db)
        } else {
            db.close()
        }
    }

    /// Reads one later piece into its spool file, on a thread of its own,
    /// in the leader's snapshot. Ends the spool file either way: finished,
    /// or failed with the reason (which the leader then fails with).
    private func readPiece(_ piece: ExportPiece, sql: String, snapshot: String, run: ExportRun, group: PieceGroup, active: Bool, storage: some ExportStorage) {
        var db: PostgresConnection?
        do {
            guard active else { throw CacheError.failed("the export threads are stopping") }
            let stop = { run.shouldStop || group.isStopped }
            // The leader took its lock on `users` at its first statement;
            // this piece takes its own only now. A statement that wants the
            // table exclusively and came in between waits for the leader, so
            // a piece queued behind it would wait for ever (the leader waits
            // for the piece in the gateway, where PostgreSQL cannot see it).
            // A piece's locks are given up after a short wait instead, and
            // the leader reads its range itself (`failedEmpty`).
            let (connection, canceller, _) = try self.begin(
                run,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT \(try Self.snapshotLiteral(snapshot)); SET LOCAL lock_timeout = '\(Self.pieceLockTimeoutMilliseconds)ms'",
                stop: stop
            )
            db = connection
            let copier = CopyPiece(
                crlf: run.request.options.crlf, rows: RowCounter(),
                write: { bytes, records in
                    try piece.spool.append(bytes, records: records)
                    run.recordSpooled(records)
                },
                reserve: { storage.reserve($0, spool: piece.reservation) },
                shouldStop: stop
            )
            try copier.copy(sql, on: connection)
            try copier.flush()
            piece.spool.finish()
            db = nil
            self.end(connection, canceller: canceller, of: run)
        } catch {
            db?.close()
            piece.spool.fail(error)
        }
    }

    /// Runs a later piece on a piece thread; the argument is false when the
    /// threads are stopping (the piece must give up at once).
    private func startPiece(_ body: @escaping @Sendable (Bool) -> Void) {
        guard let pieceThreads = self.pieceThreads else { return body(false) }
        pieceThreads.submit { body($0 == .active) }
    }

    /// How long a later piece waits for a lock before the leader reads its range instead.
    static let pieceLockTimeoutMilliseconds = 200

    /// The snapshot name as an SQL literal. PostgreSQL makes these names
    /// (`00000003-0000001B-1`): hex digits and dashes, checked all the same,
    /// since it goes into SQL text.
    private static func snapshotLiteral(_ name: String) throws -> String {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 70) || ($0 >= 97 && $0 <= 102) }) else {
            throw PostgresError.queryFailed(sqlState: nil, "unexpected snapshot name from pg_export_snapshot()")
        }
        return "'\(name)'"
    }
    private static let crlf: [UInt8] = [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
}
