import AsyncHTTPClient
import NIOCore
import NIOHTTP1

/// One download request.
struct DownloadSpec: Sendable {
    /// Path and query (a signed link, `links.download`, or `/exports/csv?…`).
    var path: String
    var authorize = true
    /// A `Range` value, e.g. `bytes=100-` (without it the whole body).
    var range: String?
    var ifRange: String?
    var gzip = false
    /// Read at most this many bytes a second (a slow client).
    var bytesPerSecond: Int?
    /// Stop reading (and drop the connection) after this many body bytes of
    /// this response: a deliberate interruption, to resume later.
    var stopAfter: Int?
    /// Keep the body in memory up to this many bytes (ranges are small).
    var collectUpTo: Int?
    /// Write the body into this file, from offset 0.
    var file: LocalFile?
    /// Whose latency a complete body is: `.download` or `.range`.
    var operation = Operation.download
}

/// How a download ended.
enum DownloadEnd: Sendable, Equatable {
    /// The body ended as HTTP says it ends (length reached, final chunk).
    case complete
    /// The load test stopped reading (`stopAfter`).
    case stopped
    /// The connection failed before the body's end: an aborted transfer.
    case cut(String)
    /// No byte came for `--read-timeout` seconds: the gateway stalled this reader.
    case stalled
}

struct DownloadResult: Sendable {
    let code: Int
    let headers: HTTPHeaders
    let end: DownloadEnd
    /// Body bytes of this response.
    let bodyBytes: Int
    /// The body when `collectUpTo` was given (and it fit).
    let collected: [UInt8]?
    let collectOverflow: Bool

    var isGzip: Bool { self.headers.first(name: "Content-Encoding")?.lowercased() == "gzip" }
    var etag: String? { self.headers.first(name: "ETag") }
}

extension GatewayClient {
    /// Streams one response into `state` (hash, inflate, file, memory),
    /// paced when asked. Nil when no answer came (recorded as `transport`)
    /// or the run's limit cancelled it. Any 5xx is recorded here.
    func download(_ spec: DownloadSpec, into state: BodyState) async -> DownloadResult? {
        var headers: [(String, String)] = []
        if let range = spec.range { headers.append(("Range", range)) }
        if let ifRange = spec.ifRange { headers.append(("If-Range", ifRange)) }
        headers.append(("Accept-Encoding", spec.gzip ? "gzip" : "identity"))
        let request = self.request(.GET, spec.path, authorize: spec.authorize, headers: headers)
        let started = ContinuousClock.now
        let response: HTTPClientResponse
        do {
            response = try await self.http.execute(request, deadline: self.deadline)
        } catch {
            if !Task.isCancelled { self.recorder.error(.transport, "GET \(Self.shown(spec.path)): \(error)") }
            return nil
        }
        self.recorder.requestAnswered()
        let code = Int(response.status.code)
        let isBody = code == 200 || code == 206
        if code == 200, spec.range != nil { state.restart() }
        if isBody, response.headers.first(name: "Content-Encoding")?.lowercased() == "gzip" {
            state.startGzip()
        } else if isBody, spec.gzip {
            // Allowed: past GZIP_QUEUE the gateway sends the CSV as it is.
            self.recorder.count(.gzipDeclined)
        }
        var bodyBytes = 0
        var collected: [UInt8]? = spec.collectUpTo != nil || !isBody ? [] : nil
        var overflow = false
        var end = DownloadEnd.complete
        do {
            for try await chunk in response.body {
                if bodyBytes == 0, chunk.readableBytes > 0, isBody, spec.operation == .download { self.recorder.record(.firstByte, .now - started) }
                var chunk = chunk
                if let stopAfter = spec.stopAfter, bodyBytes + chunk.readableBytes >= stopAfter, isBody {
                    chunk = chunk.getSlice(at: chunk.readerIndex, length: stopAfter - bodyBytes) ?? chunk
                    end = .stopped
                }
                bodyBytes += chunk.readableBytes
                self.recorder.received(chunk.readableBytes)
                if isBody { state.take(chunk) }
                if collected != nil {
                    let limit = isBody ? spec.collectUpTo ?? 0 : 64 << 10
                    if (collected?.count ?? 0) + chunk.readableBytes <= limit {
                        collected?.append(contentsOf: chunk.readableBytesView)
                    } else {
                        overflow = true
                    }
                }
                if let file = spec.file, isBody { try await file.write(chunk, at: bodyBytes - chunk.readableBytes) }
                if end == .stopped { break }
                if let rate = spec.bytesPerSecond {
                    try await ContinuousClock().sleep(until: started + .seconds(Double(bodyBytes) / Double(rate)))
                }
            }
        } catch let error as LocalFile.Failure {
            // The load test's own disk, not the gateway: the body is not judged.
            Console.line("local file: \(error)")
            return nil
        } catch let error as HTTPClientError where error == .readTimeout {
            end = .stalled
        } catch {
            if Task.isCancelled { return nil }
            end = .cut("\(error)")
        }
        if end == .complete, isBody { self.recorder.record(spec.operation, .now - started) }
        let result = DownloadResult(code: code, headers: response.headers, end: end, bodyBytes: bodyBytes, collected: collected, collectOverflow: overflow)
        if code >= 500 { self.recorder.error(.http5xx, "GET \(Self.shown(spec.path)): \(code) \(String(decoding: collected ?? [], as: UTF8.self).prefix(200))") }
        return result
    }
}
