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
struct DownloadResponder: Sendable {
    let manager: ExportManager
    var rangeWait: Duration = .seconds(15)
    var threadPool: NIOThreadPool = .singleton
    /// Reads of a file that is still growing: they rarely find more than one
    /// write of the export (256 KiB) waiting, and a dozen live readers stay small.
    var liveChunkSize = 128 * 1024
    /// Reads of a finished file: large enough that the thread-pool hop per
    /// read is cheap next to the copy (measured: 512 KiB serves a 1.3 GB file
    /// in 0.47 s where 128 KiB took 0.9 s).
    var finishedChunkSize = 512 * 1024

    func response(for job: ExportJob, request: Request, extraHeaders: HTTPFields = [:]) async throws -> Response {
        switch job.status {
        case .cancelled: throw APIError.exportCancelled()
        case .failed: throw APIError.exportFailed(job.snapshot().error ?? "unknown error")
        case .queued, .running, .completed: break
        }
        var headers = extraHeaders
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[.contentDisposition] = "attachment; filename=\"export-\(job.id.uuidString.lowercased()).csv\""
        headers[.vary] = "Accept-Encoding"
        let file: GrowingFile
        if AcceptEncoding.prefersGzip(request.headers[.acceptEncoding]) {
            headers[.contentEncoding] = "gzip"
            file = self.manager.gzipFile(for: job)
        } else {
            file = job.file
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

    /// A finished file: validators, ranges and the digest of what is sent.
    private func finished(_ published: PublishedFile, file: GrowingFile, request: Request, headers: HTTPFields) async throws -> Response {
        // Opened before anything is promised: a delete or an eviction from
        // now on unlinks a file this response still reads to the end.
        let opened: OpenedFile
        do {
            opened = try await self.threadPool.runIfActive { try OpenedFile(path: published.path) }
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
        let (threadPool, manager) = (self.threadPool, self.manager)
        return ResponseBody(contentLength: length) { writer in
            for range in ranges ?? [0...(Int.max - 1)] {
                try await Self.copy(file, range: range, to: &writer, threadPool: threadPool, chunkSize: chunkSize, opened: opened, manager: manager)
            }
            try await writer.finish(nil)
        }
    }

    private func multipartBody(_ file: GrowingFile, _ multipart: MultipartByteRanges, opened: OpenedFile) -> ResponseBody {
        let (threadPool, chunkSize, manager) = (self.threadPool, self.finishedChunkSize, self.manager)
        return ResponseBody(contentLength: multipart.length) { writer in
            for (range, header) in zip(multipart.ranges, multipart.partHeaders) {
                try await writer.write(ByteBuffer(string: header))
                try await Self.copy(file, range: range, to: &writer, threadPool: threadPool, chunkSize: chunkSize, opened: opened, manager: manager)
            }
            try await writer.write(ByteBuffer(string: multipart.closing))
            try await writer.finish(nil)
        }
    }

    /// Each write returns when the connection has taken the bytes: that is the
    /// backpressure that keeps a slow client from costing memory.
    ///
    /// On graceful shutdown a download stops between chunks, without the
    /// final chunk, so the client sees an aborted transfer it can resume
    /// after the restart; and it tells the manager to stop the exports at
    /// once, which wakes live readers. Otherwise the server would wait for
    /// every download, and so for every running export, before stopping.
    private static func copy(_ file: GrowingFile, range: ClosedRange<Int>, to writer: inout any ResponseBodyWriter, threadPool: NIOThreadPool, chunkSize: Int, opened: OpenedFile?, manager: ExportManager) async throws {
        let end = range.upperBound == Int.max - 1 ? nil : range.upperBound + 1
        let reader = GrowingFileReader(file: file, from: range.lowerBound, to: end, chunkSize: chunkSize, threadPool: threadPool, opened: opened)
        try await withGracefulShutdownHandler {
            while let chunk = try await reader.next() {
                if manager.isShuttingDown { throw CancellationError() }
                try await writer.write(chunk)
            }
        } onGracefulShutdown: {
            manager.stopAll()
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
