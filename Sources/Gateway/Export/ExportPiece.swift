import Cache
import Foundation

/// A later piece of a parallel export (`ExportRunner`): its range of ids,
/// the spool file its own connection writes (in the leader's snapshot), the
/// id its bytes are reserved under in the cache, and the stitch that copies
/// the spool into the export's file, in order, as it fills.
struct ExportPiece: Sendable {
    let ids: IDRange
    let spool: SpoolFile
    let reservation = UUID()

    /// Copies a piece's spool file into the export's file as its writer
    /// fills it, until its writer has finished and every byte is in; throws
    /// the writer's error, or a cancel. `copied` hears how many more records
    /// are in the file. Copied bytes move from the spool's reservation to
    /// the file's. The spool's blocks are given back when it is removed,
    /// right after it is copied, not while: punching holes as it went would
    /// make ext4 write the dirty pages of each range out before punching it.
    func stitch(into file: CacheWriter, block: UnsafeMutableRawBufferPointer, run: ExportRun, storage: some ExportStorage, copied: (Int) -> Void) throws {
        var offset = 0
        var records = 0
        while true {
            if run.shouldStop { throw CacheError.cancelled() }
            let result = try self.spool.read(into: block, at: offset, timeout: 1)
            var wrote = false
            if case .bytes(let n) = result {
                try file.write(UnsafeRawBufferPointer(rebasing: block[0..<n]))
                storage.adopt(n, fromSpool: self.reservation)
                offset += n
                wrote = true
            }
            // Counted on every pass, not only after bytes: a record longer
            // than the writer's block is told with an append of no bytes,
            // which may come after its last byte was copied.
            let now = self.spool.records(within: offset)
            if wrote || now > records {
                copied(now - records)
                records = now
            }
            if case .ended = result { return }
        }
    }
}
