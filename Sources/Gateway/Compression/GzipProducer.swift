import Cache
import Logging
import NIOCore
import NIOPosix

/// Makes the gzip form of an export once, for every gzip reader: one
/// compressor follows the CSV file (growing or finished) and writes a second
/// growing file, published under its own SHA-256 like the CSV. Gzip readers
/// follow that file exactly as CSV readers follow the CSV, so it has ranges,
/// a strong ETag and resumes once complete, and no client costs a compressor.
struct GzipProducer: Sendable {
    let store: ContentStore
    let level: Int32
    var threadPool: NIOThreadPool = .singleton
    var chunkSize = 256 * 1024
    let logger: Logger

    /// Compresses `source` into `target` until the source ends. Returns the
    /// published gzip file, or nil when the source failed (then `target` fails too).
    func run(source: GrowingFile, target: SharedFile, reserve: @escaping @Sendable (Int) -> Bool = { _ in true }) async -> PublishedFile? {
        let store = self.store
        let level = self.level
        var work: Work?
        do {
            let started = try await self.threadPool.runIfActive { try Work(stream: GzipStream(level: level), writer: store.createWriter(suffix: ".csv.gz")) }
            work = started
            target.begin(path: started.writer.partialPath)
            let reader = GrowingFileReader(file: source, chunkSize: self.chunkSize, threadPool: self.threadPool)
            while let chunk = try await reader.next() {
                try Task.checkCancellation()
                // Caught up with a live export: flush, so gzip readers get
                // everything the CSV has so far instead of waiting on zlib.
                let flush = reader.isCaughtUp
                // Compressed output is at most the input plus a little.
                guard reserve(chunk.readableBytes + 64) else { throw CacheError.cacheFull() }
                let length = try await self.threadPool.runIfActive { try started.append(chunk, flush: flush) }
                target.append(length: length)
            }
            let published = try await self.threadPool.runIfActive { try started.finish() }
            target.complete(published)
            return published
        } catch {
            if let work { try? await self.threadPool.runIfActive { work.writer.discard() } }
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
        let stream: GzipStream
        let writer: CacheWriter

        init(stream: GzipStream, writer: CacheWriter) {
            self.stream = stream
            self.writer = writer
        }

        func append(_ chunk: ByteBuffer, flush: Bool) throws -> Int {
            try self.write(self.stream.compress(chunk))
            if flush { for buffer in try self.stream.flush() { try self.write(buffer) } }
            return self.writer.length
        }

        func finish() throws -> PublishedFile {
            for buffer in try self.stream.finish() { try self.write(buffer) }
            return try self.writer.publish()
        }

        private func write(_ buffer: ByteBuffer) throws {
            try buffer.withUnsafeReadableBytes { try self.writer.write($0) }
        }
    }
}
