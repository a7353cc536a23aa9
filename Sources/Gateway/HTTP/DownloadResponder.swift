import Cache
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Builds the response that downloads an export, as its CSV or, when the
/// client prefers gzip, as its gzip form (made once by `GzipProducer`). Both
/// are growing files and are served the same way:
///
/// - Finished: `Content-Length`, a strong `ETag` (the SHA-256 of the bytes
///   sent), `Repr-Digest`, `Accept-Ranges`; one or several ranges (206, single
///   or `multipart/byteranges`), 416, `If-Range`, `If-None-Match` (304).
/// - Still being written: 200, chunked, following the file to its end; if
///   the export fails or is cancelled the body throws, the connection closes
///   without the final chunk, and the client sees an aborted transfer. A
///   closed range whose bytes exist is a 206 with `Content-Range: bytes a-b/*`;
///   a range that reaches past them waits (up to `rangeWait`) for the bytes or
///   the end, and is otherwise ignored. Never a short 206 that looks final.
///
/// Memory: every chunk read comes from one `ReadBufferPool` shared by all
/// downloads (DOWNLOAD_BUFFER_BYTES), and goes back to it when the connection
/// has sent it, so many or slow clients share a bounded budget.
///
/// Shutdown: a live download (of an export still being written) is aborted
/// when the shutdown begins (its run is interrupted, so the reader throws); a
/// download of a finished file goes on until it ends or SHUTDOWN_GRACE has
/// passed, when the service group cancels the connection's task (see
/// `GatewayMain`).
struct DownloadResponder: Sendable {
    let manager: ExportManager
    let buffers: ReadBufferPool
    var rangeWait: Duration = .seconds(15)
    /// Reads of a file that is still growing: they rarely find more than one
    /// write of the export (at most 256 KiB) waiting.
    var liveChunkSize = 256 * 1024
    /// Reads of a finished file: large enough that the thread-pool hop per
    /// read is cheap next to the copy (measured: 512 KiB serves a 1.3 GB file
    /// in 0.47 s where 128 KiB took 0.9 s; 1 MiB 0.51 s against nginx's
    /// 0.53 s with sendfile, alternating, where 512 KiB was 0.50 against
    /// 0.47). Many readers get less: the pool's fair share.
    var finishedChunkSize = 1024 * 1024

    private var threadPool: NIOThreadPool { self.manager.pools.downloads }

    /// Which representation a download path asks for.
    enum Form: Sendable, CaseIterable {
        /// `/download`: the CSV, or its gzip form with `Content-Encoding: gzip`
        /// when the client prefers it (what curl, wget and scripts use).
        case negotiated
        /// `/download.csv`: always the CSV, whatever `Accept-Encoding` says.
        /// Browsers send `Accept-Encoding: gzip` and decode what they save, so
        /// a negotiated download lands decoded under a `.gz` name, and their
        /// resume (`Range` with `Accept-Encoding: identity`) never matches the
        /// gzip ETag: this path gives them one representation to save and resume.
        case csv
        /// `/download.csv.gz`: the gzip form as a file of its own
        /// (`application/gzip`, no `Content-Encoding`), saved as it is sent.
        case gzipFile

        /// The last segment of its path, `/exports/{id}/<segment>`.
        var pathSegment: String {
            switch self {
            case .negotiated: "download"
            case .csv: "download.csv"
            case .gzipFile: "download.csv.gz"
            }
        }
    }

    func response(for job: ExportJob, request: Request, form: Form = .negotiated, extraHeaders: HTTPFields = [:]) async throws -> Response {
        switch job.status {
        case .cancelled: throw APIError.exportCancelled()
        case .failed: throw APIError.exportFailed(job.snapshot().error ?? "unknown error")
        case .queued, .running, .completed: break
        }
        var headers = extraHeaders
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[.contentDisposition] = Self.contentDisposition(job, gzip: false)
        var file = job.file
        // HEAD never starts a compressor: without a gzip form yet, it gets
        // the head a GET would get, that of a live gzip form (chunked, no
        // length), or of the CSV when no compressor is free. A GET whose
        // form cannot be made now (GZIP_WORKERS + GZIP_QUEUE busy) gets the
        // CSV, or for `.csv.gz` a 503 to retry.
        let isHead = request.method == .head
        switch form {
        case .csv:
            break
        case .negotiated:
            headers[.vary] = "Accept-Encoding"
            guard AcceptEncoding.prefersGzip(request.headers[.acceptEncoding]) else { break }
            var gzipHeaders = headers
            gzipHeaders[.contentEncoding] = "gzip"
            gzipHeaders[.contentDisposition] = Self.contentDisposition(job, gzip: true)
            switch self.gzipForm(of: job, isHead: isHead) {
            case .file(let gzip): (file, headers) = (gzip, gzipHeaders)
            case .notMadeYet: return Self.liveHead(gzipHeaders)
            case .busy: break
            }
        case .gzipFile:
            headers[.contentType] = "application/gzip"
            headers[.contentDisposition] = Self.contentDisposition(job, gzip: true)
            switch self.gzipForm(of: job, isHead: isHead) {
            case .file(let gzip): file = gzip
            case .notMadeYet: return Self.liveHead(headers)
            case .busy: throw APIError.unavailable("every compressor is busy (GZIP_WORKERS, GZIP_QUEUE); retry shortly, or download the CSV", retryAfterSeconds: 5)
            }
        }

        if let published = file.completedFile {
            return try await self.finished(published, file: file, request: request, headers: headers)
        }
        // Still being written. A Range asks for bytes that may not exist yet.
        if let specs = ByteRange.specs(request.headers[.range]), request.headers[.ifRange] == nil {
            if specs.count == 1, case .closed(let first, let last) = specs[0] {
                if try await self.waitForProgress(file, beyond: last) {
                    if let published = file.completedFile {
                        return try await self.finished(published, file: file, request: request, headers: headers)
                    }
                    headers[.cacheControl] = "no-store"
                    headers[.contentRange] = "bytes \(first)-\(last)/*"
                    headers[.contentLength] = String(last - first + 1)
                    return Response(status: .partialContent, headers: headers, body: self.body(file, ranges: [first...last], chunkSize: self.liveChunkSize))
                }
            } else if try await self.waitForProgress(file, beyond: .max - 1), let published = file.completedFile {
                // Open-ended and suffix ranges need the final size: answered once it is known.
                return try await self.finished(published, file: file, request: request, headers: headers)
            }
            // Waited long enough: the whole file, live. `curl -C -` refuses a 200
            // to a resume rather than taking it for the rest.
        }
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: self.body(file, ranges: nil, chunkSize: self.liveChunkSize))
    }

    private enum GzipForm {
        /// The gzip form, made or being made (a GET starts it).
        case file(GrowingFile)
        /// A HEAD, and none is being made yet: a compressor could start.
        case notMadeYet
        /// GZIP_WORKERS + GZIP_QUEUE forms are being made.
        case busy
    }

    private func gzipForm(of job: ExportJob, isHead: Bool) -> GzipForm {
        if let gzip = self.manager.gzipFile(for: job, start: !isHead) { return .file(gzip) }
        return isHead && self.manager.couldStartGzip ? .notMadeYet : .busy
    }

    /// The head of a gzip form not made yet, as a GET would begin it: a body
    /// of unknown length, so HEAD sends no length.
    private static func liveHead(_ headers: HTTPFields) -> Response {
        var headers = headers
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in try await writer.finish(nil) })
    }

    /// `attachment; filename="users-<yyyymmdd>-<first 8 of the id>.csv"` (`.csv.gz`
    /// for the gzip form), the day being the export's, in UTC: what a browser saves it as.
    static func contentDisposition(_ job: ExportJob, gzip: Bool) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0) ?? calendar.timeZone
        let parts = calendar.dateComponents([.year, .month, .day], from: job.createdAt)
        let day = String(format: "%04d%02d%02d", parts.year ?? 1970, parts.month ?? 1, parts.day ?? 1)
        let id = job.id.uuidString.lowercased().prefix(8)
        return "attachment; filename=\"users-\(day)-\(id).csv\(gzip ? ".gz" : "")\""
    }

    /// A finished file: validators, ranges and the digest of what is sent.
    private func finished(_ published: PublishedFile, file: GrowingFile, request: Request, headers: HTTPFields) async throws -> Response {
        // Opened before anything is promised: a delete or an eviction from
        // now on unlinks a file this response still reads to the end.
        let opened: OpenedFile
        do {
            opened = try await self.manager.openPublished(published)
        } catch {
            throw APIError.fileGone()
        }
        var headers = headers
        let etag = "\"\(published.sha256)\""
        headers[.eTag] = etag
        headers[.acceptRanges] = "bytes"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("Repr-Digest")!] = "sha-256=:\(Self.base64(hex: published.sha256)):"
        if let ifNoneMatch = request.headers[.ifNoneMatch], Self.matches(ifNoneMatch, etag: etag) {
            headers[.contentType] = nil
            headers[.contentDisposition] = nil
            return Response(status: .notModified, headers: headers)
        }
        var resolution = ByteRange.parse(request.headers[.range], size: published.size)
        if let ifRange = request.headers[.ifRange], ifRange.trimmingSpaces() != etag {
            // The client's copy is of other bytes (or dated): it needs the whole file.
            resolution = .none
        }
        switch resolution {
        case .none:
            headers[.contentLength] = String(published.size)
            return Response(status: .ok, headers: headers, body: self.body(file, ranges: nil, chunkSize: self.finishedChunkSize, length: published.size, opened: opened))
        case .unsatisfiable:
            headers[.contentRange] = "bytes */\(published.size)"
            headers[.contentLength] = "0"
            headers[.contentDisposition] = nil
            return Response(status: .rangeNotSatisfiable, headers: headers)
        case .ranges(let ranges) where ranges.count == 1:
            let range = ranges[0]
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(published.size)"
            headers[.contentLength] = String(range.count)
            return Response(status: .partialContent, headers: headers, body: self.body(file, ranges: ranges, chunkSize: self.finishedChunkSize, length: range.count, opened: opened))
        case .ranges(let ranges):
            let multipart = MultipartByteRanges(ranges: ranges, size: published.size, contentType: headers[.contentType] ?? "application/octet-stream")
            headers[.contentType] = multipart.contentType
            headers[.contentLength] = String(multipart.length)
            return Response(status: .partialContent, headers: headers, body: self.multipartBody(file, multipart, opened: opened))
        }
    }

    /// Waits until `file` has a byte past `offset` or has ended, at most
    /// `rangeWait`. True if that happened; throws if the export failed.
    private func waitForProgress(_ file: GrowingFile, beyond offset: Int) async throws -> Bool {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = try await file.progress(beyond: offset)
                return true
            }
            group.addTask { [rangeWait] in
                try await Task.sleep(for: rangeWait)
                return false
            }
            defer { group.cancelAll() }
            do {
                return try await group.next() ?? false
            } catch let error as CacheError {
                throw error.isCancelled ? APIError.exportCancelled() : APIError.exportFailed(error.description)
            }
        }
    }

    /// `If-None-Match`: `*` or a list of entity tags, compared weakly (RFC 9110 §13.1.2).
    static func matches(_ header: String, etag: String) -> Bool {
        header.split(separator: ",").contains { candidate in
            let tag = candidate.trimmingSpaces()
            return tag == "*" || tag == etag || tag == "W/" + etag
        }
    }

    static func base64(hex: String) -> String {
        var bytes = [UInt8]()
        var index = hex.startIndex
        while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) {
            bytes.append(UInt8(hex[index..<next], radix: 16) ?? 0)
            index = next
        }
        return Data(bytes).base64EncodedString()
    }

    /// Streams `ranges` of the file (all of it when nil), following it while it grows.
    private func body(_ file: GrowingFile, ranges: [ClosedRange<Int>]?, chunkSize: Int, length: Int? = nil, opened: OpenedFile? = nil) -> ResponseBody {
        let copier = self.copier(file, chunkSize: chunkSize, opened: opened)
        let live = opened == nil
        return ResponseBody(contentLength: length) { writer in
            if live { Telemetry.liveReaders.add(1, ordering: .relaxed) }
            defer { if live { Telemetry.liveReaders.subtract(1, ordering: .relaxed) } }
            for range in ranges ?? [0...(Int.max - 1)] {
                try await copier.copy(range, to: &writer)
            }
            try await writer.finish(nil)
        }
    }

    private func multipartBody(_ file: GrowingFile, _ multipart: MultipartByteRanges, opened: OpenedFile) -> ResponseBody {
        let copier = self.copier(file, chunkSize: self.finishedChunkSize, opened: opened)
        return ResponseBody(contentLength: multipart.length) { writer in
            for (range, header) in zip(multipart.ranges, multipart.partHeaders) {
                try await writer.write(ByteBuffer(string: header))
                try await copier.copy(range, to: &writer)
            }
            try await writer.write(ByteBuffer(string: multipart.closing))
            try await writer.finish(nil)
        }
    }

    private func copier(_ file: GrowingFile, chunkSize: Int, opened: OpenedFile?) -> Copier {
        Copier(file: file, threadPool: self.threadPool, buffers: self.buffers, chunkSize: chunkSize, opened: opened)
    }

    /// Copies ranges of one file to one response.
    private struct Copier: Sendable {
        let file: GrowingFile
        let threadPool: NIOThreadPool
        let buffers: ReadBufferPool
        let chunkSize: Int
        let opened: OpenedFile?

        /// Copies one range, following the file while it grows. Throws (an
        /// aborted transfer, never a short ending that looks complete) if the
        /// export fails, is cancelled or is interrupted by a shutdown, or the
        /// task is cancelled.
        func copy(_ range: ClosedRange<Int>, to writer: inout any ResponseBodyWriter) async throws {
            let end = range.upperBound == Int.max - 1 ? nil : range.upperBound + 1
            let lease = self.buffers.lease()
            let reader = GrowingFileReader(file: self.file, from: range.lowerBound, to: end, chunkSize: self.chunkSize, threadPool: self.threadPool, buffers: lease, opened: self.opened)
            let clock = ContinuousClock()
            while let chunk = try await reader.next() {
                let start = clock.now
                let bytes = chunk.readableBytes
                try await writer.write(chunk)
                Telemetry.downloadBytes.increment(by: Int64(bytes))
                // A write waits only while the socket's queue is full: the
                // client takes less than the disk gives (under 10 MB/s or so).
                if !lease.clientIsSlow, clock.now - start > .milliseconds(50) { lease.clientIsSlow = true }
            }
        }
    }
}

/// The framing of a `multipart/byteranges` body (RFC 9110 §14.6).
struct MultipartByteRanges {
    let ranges: [ClosedRange<Int>]
    let boundary = "csv-export-" + UUID().uuidString.lowercased()
    let partHeaders: [String]
    let closing: String
    let length: Int
    var contentType: String { "multipart/byteranges; boundary=\(self.boundary)" }

    init(ranges: [ClosedRange<Int>], size: Int, contentType: String) {
        self.ranges = ranges
        let boundary = self.boundary
        self.partHeaders = ranges.enumerated().map { index, range in
            (index == 0 ? "" : "\r\n") + "--\(boundary)\r\nContent-Type: \(contentType)\r\nContent-Range: bytes \(range.lowerBound)-\(range.upperBound)/\(size)\r\n\r\n"
        }
        self.closing = "\r\n--\(boundary)--\r\n"
        self.length = self.partHeaders.reduce(0) { $0 + $1.utf8.count } + ranges.reduce(0) { $0 + $1.count } + self.closing.utf8.count
    }
}
