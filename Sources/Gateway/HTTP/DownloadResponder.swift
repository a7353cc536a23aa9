import Cache
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix

/// Builds the response that downloads an export.
///
/// - Queued or running: 200, chunked, following the growing file until the
///   export ends. If it fails or is cancelled the body throws, the connection
///   closes without the final chunk, and the client sees an aborted transfer.
/// - Completed: `Content-Length`, strong `ETag` (the SHA-256), `Accept-Ranges`,
///   one `Range` (206 / 416), `If-Range`, `If-None-Match` (304).
/// - `Accept-Encoding: gzip`: compressed on the fly in both cases, without
///   ranges, `Content-Length` or the CSV's ETag, since the bytes differ.
struct DownloadResponder: Sendable {
    var threadPool: NIOThreadPool = .singleton
    var chunkSize = 128 * 1024

    func response(for job: ExportJob, request: Request, extraHeaders: HTTPFields = [:]) throws -> Response {
        var headers = extraHeaders
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[.contentDisposition] = "attachment; filename=\"export-\(job.id.uuidString.lowercased()).csv\""
        headers[.vary] = "Accept-Encoding"

        switch job.status {
        case .cancelled:
            throw APIError.exportCancelled()
        case .failed:
            throw APIError.exportFailed(job.snapshot().error ?? "unknown error")
        case .queued, .running, .completed:
            break
        }

        let gzip = AcceptEncoding.prefersGzip(request.headers[.acceptEncoding])
        guard let file = job.publishedFile else {
            headers[.cacheControl] = "no-store"
            if gzip { headers[.contentEncoding] = "gzip" }
            return Response(status: .ok, headers: headers, body: self.body(job.file, range: nil, gzip: gzip))
        }

        if gzip {
            headers[.contentEncoding] = "gzip"
            return Response(status: .ok, headers: headers, body: self.body(job.file, range: nil, gzip: true))
        }

        let etag = "\"\(file.sha256)\""
        headers[.eTag] = etag
        headers[.acceptRanges] = "bytes"
        headers[.cacheControl] = "no-cache"
        if let ifNoneMatch = request.headers[.ifNoneMatch], Self.matches(ifNoneMatch, etag: etag) {
            headers[.contentType] = nil
            headers[.contentDisposition] = nil
            return Response(status: .notModified, headers: headers)
        }

        var range = ByteRange.parse(request.headers[.range], size: file.size)
        if let ifRange = request.headers[.ifRange], ifRange.trimmingSpaces() != etag {
            // The client's copy is of other bytes: it needs the whole file.
            range = .none
        }
        switch range {
        case .none:
            headers[.contentLength] = String(file.size)
            return Response(status: .ok, headers: headers, body: self.body(job.file, range: nil, gzip: false, length: file.size))
        case .unsatisfiable:
            throw APIError.rangeNotSatisfiable(size: file.size)
        case .satisfiable(let bytes):
            headers[.contentRange] = "bytes \(bytes.lowerBound)-\(bytes.upperBound)/\(file.size)"
            headers[.contentLength] = String(bytes.count)
            return Response(status: .partialContent, headers: headers, body: self.body(job.file, range: bytes, gzip: false, length: bytes.count))
        }
    }

    /// `If-None-Match`: `*` or a list of entity tags, compared weakly (RFC 9110 §13.1.2).
    static func matches(_ header: String, etag: String) -> Bool {
        header.split(separator: ",").contains { candidate in
            let tag = candidate.trimmingSpaces()
            return tag == "*" || tag == etag || tag == "W/" + etag
        }
    }

    private func body(_ file: GrowingFile, range: ClosedRange<Int>?, gzip: Bool, length: Int? = nil) -> ResponseBody {
        let threadPool = self.threadPool
        let chunkSize = self.chunkSize
        return ResponseBody(contentLength: length) { writer in
            let reader = GrowingFileReader(
                file: file,
                from: range?.lowerBound ?? 0,
                to: range.map { $0.upperBound + 1 },
                chunkSize: chunkSize,
                threadPool: threadPool
            )
            let gzipStream = gzip ? try GzipStream() : nil
            // Each write returns when the connection has taken the bytes: that
            // is the backpressure that keeps a slow client from costing memory.
            while let chunk = try await reader.next() {
                if let gzipStream {
                    let compressed = try gzipStream.compress(chunk)
                    if compressed.readableBytes > 0 { try await writer.write(compressed) }
                    if reader.isCaughtUp { try await writer.write(contentsOf: try gzipStream.flush()) }
                } else {
                    try await writer.write(chunk)
                }
            }
            if let gzipStream { try await writer.write(contentsOf: try gzipStream.finish()) }
            try await writer.finish(nil)
        }
    }
}
