import Cache
import Logging
import NIOCore
import NIOPosix

/// Makes the gzip form of an export once, for every gzip reader: one
/// compressor follows the CSV file (growing or finished) and writes a second
/// growing file, published under its own SHA-256 like the CSV. Gzip readers
/// follow that file exactly as CSV readers follow the CSV, so it has ranges,
/// a strong ETag and resumes once complete, and no client costs a compressor.
///
/// Compression runs on a pool of its own (`BlockingPools.compression`), so a
/// burst of it never delays a download's reads; how many run at once is the
/// manager's business (`GZIP_WORKERS`). The form is a pure function of the
/// CSV (`DeterministicGzip`), so making it again gives the same bytes.
struct GzipProducer: Sendable {
    let store: ContentStore
    let level: Int32
    let threadPool: NIOThreadPool
    var chunkSize = 256 * 1024
    let logger: Logger

    /// Compresses `source` into `target` until the source ends. Returns the
    /// published gzip file, or nil when the source failed or the task was
    /// cancelled (then `target` fails too). Its file goes through `storage`
    /// (room under CACHE_MAX_BYTES, the publish), like an export's CSV.
    func run(source: GrowingFile, target: SharedFile, storage: some ExportStorage) async -> PublishedFile? {
        let store = self.store
        let level = self.level
        var work: Work?
        do {
            let started = try await self.threadPool.runIfActive { try Work(gzip: DeterministicGzip(level: level), writer: store.createWriter(suffix: ".csv.gz")) }
            work = started
            target.begin(path: started.writer.partialPath)
            let reader = GrowingFileReader(file: source, chunkSize: self.chunkSize, threadPool: self.threadPool)
            while let chunk = try await reader.next() {
                try Task.checkCancellation()
                let length = try await self.threadPool.runIfActive { try started.append(chunk, reserve: { storage.reserve($0, spool: nil) }) }
                target.append(length: length)
            }
            let sealed = try await self.threadPool.runIfActive { try started.finish(reserve: { storage.reserve($0, spool: nil) }) }
            work = nil
            let published: PublishedFile
            do {
                // `publish` blocks (it waits for the files thread): on this pool.
                published = try await self.threadPool.runIfActive { try storage.publish(sealed, rows: nil) }
            } catch {
                // Not installed (cancelled, or the run went): the sealed file goes.
                self.threadPool.submit { _ in store.discard(sealed) }
                storage.discarded(spool: nil)
                throw error
            }
            target.complete(published)
            return published
        } catch {
            if let work {
                // Removed on the pool, even a stopping one (it then runs the
                // closure elsewhere): the file may be large, and this is the
                // cooperative pool; `runIfActive` would skip it if cancelled.
                self.threadPool.submit { _ in work.writer.discard() }
                storage.discarded(spool: nil)
            }
            let cacheError = error as? CacheError ?? CacheError.failed("gzip: \(error)")
            // A CSV that failed or was cancelled is logged by its export; a
            // disk problem here is this producer's own.
            self.logger.log(level: cacheError.isDiskFull ? .warning : .debug, "gzip form not made", metadata: ["error": "\(cacheError.details)"])
            target.fail(cacheError)
            return nil
        }
    }

    /// The compressor and the file it writes, handed between pool threads.
    /// `@unchecked Sendable`: one `run` owns it and awaits each call before
    /// the next, so only one thread touches it at a time.
    private final class Work: @unchecked Sendable {
        let gzip: DeterministicGzip
        let writer: CacheWriter

        init(gzip: DeterministicGzip, writer: CacheWriter) {
            self.gzip = gzip
            self.writer = writer
        }

        /// Compresses a chunk and writes what zlib gives back, once
        /// `reserve` has found room for exactly those bytes.
        func append(_ chunk: ByteBuffer, reserve: (Int) -> Bool) throws -> Int {
            try self.write(try self.gzip.compress(chunk), reserve: reserve)
            return self.writer.length
        }

        func finish(reserve: (Int) -> Bool) throws -> SealedFile {
            try self.write(try self.gzip.finish(), reserve: reserve)
            return try self.writer.seal()
        }

        private func write(_ buffers: [ByteBuffer], reserve: (Int) -> Bool) throws {
            guard reserve(buffers.reduce(0) { $0 + $1.readableBytes }) else { throw CacheError.cacheFull() }
            for buffer in buffers {
                try buffer.withUnsafeReadableBytes { try self.writer.write($0) }
            }
        }
    }
}
