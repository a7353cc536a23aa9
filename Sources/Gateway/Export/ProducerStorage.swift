import Cache
import Foundation

/// The cache's side of one producer (`ExportStorage`): a run's CSV written
/// by `ExportRunner`, or its gzip form written by `GzipProducer`. Its
/// reservations are the manager's ledger (`ExportManager+Cache.swift`);
/// its publish renames the sealed file into `objects/` on the files thread,
/// in the journal's transaction that records it (`ExportManager.install`).
struct ProducerStorage: ExportStorage {
    enum Kind: Sendable {
        /// A run's CSV, claimed here at this attempt: its publish completes
        /// the run in the journal, fenced by the claim.
        case csv(attempt: Int)
        /// A run's gzip form.
        case gzip
    }

    let manager: ExportManager
    let run: ExportRun
    /// The reservation of the producer's own file: the run's id for its
    /// CSV, a fresh id for each gzip form.
    let producer: UUID
    let kind: Kind
    let partialName: String?

    func reserve(_ bytes: Int, spool: UUID?) -> Bool {
        self.manager.reserve(bytes, for: spool ?? self.producer, writing: self.run)
    }

    func adopt(_ bytes: Int, fromSpool spool: UUID) {
        self.manager.transferReservation(bytes, from: spool, to: self.producer)
    }

    func discarded(spool: UUID?) {
        self.manager.endPartial(spool ?? self.producer)
    }

    func publish(_ sealed: SealedFile, rows: Int?) throws -> PublishedFile {
        let (manager, run, producer, kind) = (self.manager, self.run, self.producer, self.kind)
        do {
            return try manager.pools.files.runAndWait {
                try manager.install(sealed, holder: run, producer: producer) { rename in
                    switch kind {
                    case .gzip:
                        return try manager.journal.publishGzip(sealed, runID: run.id, rename: rename)
                    case .csv(let attempt):
                        let published = try manager.journal.publish(sealed, runID: run.id, attempt: attempt, instance: manager.instanceID, rows: rows ?? 0, rename: rename)
                        // Claimed by another gateway meanwhile: this one's file is not the export's.
                        if published == nil { _ = run.interrupt() }
                        return published
                    }
                }
            }
        } catch let error as CancellationError {
            // The files thread stopped: the process is stopping (a cancelled
            // service group may stop the pools before the manager hears of
            // it). For a run, an interruption, not a failure.
            guard case .csv = kind else { throw error }
            _ = run.interrupt()
            throw CacheError.cancelled()
        }
    }
}
