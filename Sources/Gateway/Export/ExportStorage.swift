import Cache
import Foundation

/// What a producer of a cache file (a run's CSV in `ExportRunner`, its gzip
/// form in `GzipProducer`) asks of the cache while it writes: room under
/// CACHE_MAX_BYTES before each write, the publish of the sealed file, and
/// word that a file went without a publish. One small protocol instead of
/// closures, so a producer never calls back into the registry by a path
/// the reader cannot see; the cache's side is `ProducerStorage`.
///
/// A producer writes one file of its own and, for a parallel export, one
/// spool file per later piece: a spool's bytes are reserved under its own
/// id, and move to the producer's file when it is copied in (`adopt`).
/// Every method may be called from any thread; `publish` blocks.
protocol ExportStorage: Sendable {
    /// The partial file's name in this gateway's partial folder, as the
    /// claim recorded it (other gateways' readers follow it); nil: any.
    var partialName: String? { get }

    /// Room for `bytes` more of the producer's file (`spool` nil) or of that
    /// spool file. False: the write fails cleanly, as if the disk were full.
    func reserve(_ bytes: Int, spool: UUID?) -> Bool

    /// `bytes` of a spool file are in the producer's file now: they count
    /// for the producer's file instead (reserved once, not twice).
    func adopt(_ bytes: Int, fromSpool spool: UUID)

    /// The producer's file (`spool` nil) or that spool file is gone
    /// without being published: its reservation ends.
    func discarded(spool: UUID?)

    /// Names a sealed file in `objects/` (in order with every other change
    /// there) and records it in the journal with its record count (`rows`;
    /// nil for a gzip form). Throws when it cannot be the run's file any
    /// more (the run went, or its claim was lost): the caller discards it.
    func publish(_ sealed: SealedFile, rows: Int?) throws -> PublishedFile
}
