import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// One log line per request, when its response has been sent (or cut):
/// method, route (the template, e.g. `/exports/:id/download`, never the
/// path or query a client sent), status, body bytes sent, duration, the
/// request id, the export id, and whether the body was sent whole; and the
/// request's metrics (`RequestMetrics`), recorded at the same moment.
///
/// Nothing a client sends is logged verbatim except a well-formed
/// `X-Request-Id` (1 to 128 of `A-Z a-z 0-9 . _ -`), which is echoed so a
/// client can find its request; otherwise a new id is made. So no line holds
/// a token, a signature, a filter or any personal data.
///
/// Only bodies that stream (downloads, whose end or abort is what matters)
/// are followed, through a wrapper that counts their bytes; a body of one
/// buffer (JSON, errors, metrics) is logged as the handler returns it, with
/// its length, so Hummingbird keeps its one-write fast path for it.
///
/// The outermost middleware: it also turns errors into their responses, so
/// every response, errors included, carries `X-Request-Id` and is logged.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    static let requestIDHeader = HTTPField.Name("X-Request-Id")!
    let logger: Logger
    let metrics: RequestMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        let method = Self.method(request.method)
        self.metrics.began(method: method)
        let requestID = Self.requestID(request.headers[Self.requestIDHeader])
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        } catch {
            self.metrics.ended(route: context.endpointPath ?? "NotFound", method: method, status: 500, nanoseconds: 0)
            throw error
        }
        response.headers[Self.requestIDHeader] = requestID
        let route = context.endpointPath ?? "NotFound"
        let record = Record(
            logger: self.logger, metrics: self.metrics, started: started, method: method, route: route,
            status: response.status.code, requestID: requestID,
            exportID: response.headers[ExportController.exportIDHeader] ?? Self.exportID(request.uri.path)
        )
        let streams = request.method == .get && (route.hasSuffix("/download") || route == "/exports/csv")
        guard streams else {
            record.finish(bytes: response.body.contentLength ?? 0, outcome: "complete")
            return response
        }
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            let sent = ByteTally()
            do {
                try await body.write(CountingWriter(inner: writer, sent: sent))
                record.finish(bytes: sent.count.load(ordering: .relaxed), outcome: "complete")
            } catch {
                record.finish(bytes: sent.count.load(ordering: .relaxed), outcome: "aborted")
                throw error
            }
        }
        return response
    }

    /// What is known of a request once its response is made; `finish`
    /// writes the line and the metrics, once. A streamed body that is never
    /// sent (its head could not be written: the client left while the
    /// handler waited) finishes as aborted when the record goes, so every
    /// request is logged and counted, and the active-requests gauge comes back.
    private final class Record: Sendable {
        let logger: Logger
        let metrics: RequestMetrics
        let started: ContinuousClock.Instant
        let method: String
        let route: String
        let status: Int
        let requestID: String
        let exportID: String?
        private let finished = Atomic<Bool>(false)

        init(logger: Logger, metrics: RequestMetrics, started: ContinuousClock.Instant, method: String, route: String, status: Int, requestID: String, exportID: String?) {
            self.logger = logger
            self.metrics = metrics
            self.started = started
            self.method = method
            self.route = route
            self.status = status
            self.requestID = requestID
            self.exportID = exportID
        }

        deinit { self.finish(bytes: 0, outcome: "aborted") }

        func finish(bytes: Int, outcome: String) {
            guard !self.finished.exchange(true, ordering: .relaxed) else { return }
            let elapsed = ContinuousClock.now - self.started
            let (seconds, attoseconds) = elapsed.components
            self.metrics.ended(route: self.route, method: self.method, status: self.status, nanoseconds: seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
            guard self.logger.logLevel <= .info else { return }
            var metadata: Logger.Metadata = [
                LogKey.httpMethod: "\(self.method)",
                LogKey.httpRoute: "\(self.route)",
                LogKey.httpStatus: "\(self.status)",
                LogKey.httpRequestID: "\(self.requestID)",
                LogKey.httpBytes: "\(bytes)",
                LogKey.httpDurationMilliseconds: "\(elapsed.logMilliseconds)",
                LogKey.httpOutcome: "\(outcome)",
            ]
            if let exportID = self.exportID { metadata[LogKey.exportID] = "\(exportID)" }
            self.logger.info("request", metadata: metadata)
        }
    }

    /// The client's id if it is well formed, else a new one.
    static func requestID(_ given: String?) -> String {
        if let given, (1...128).contains(given.utf8.count), given.utf8.allSatisfy(Self.isIDByte) { return given }
        // One draw (one getrandom call), not one a byte.
        var random = SystemRandomNumberGenerator()
        return Hex.string(withUnsafeBytes(of: random.next() as UInt64) { Array($0) })
    }

    private static func isIDByte(_ byte: UInt8) -> Bool {
        ASCII.isLetter(byte) || ASCII.isDigit(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// The export id in `/exports/<id>/…`, only when it is one.
    static func exportID(_ path: String) -> String? {
        let segments = path.split(separator: "/")
        guard segments.count >= 2, segments[0] == "exports", let id = UUID(uuidString: String(segments[1])) else { return nil }
        return id.uuidString.lowercased()
    }

    /// The methods the API knows by name; anything else is "other", so a
    /// client cannot write what it likes into the log.
    static func method(_ method: HTTPRequest.Method) -> String {
        [.get, .head, .post, .put, .delete, .options, .patch, .trace, .connect].contains(method) ? method.rawValue : "other"
    }

}

/// Passes a body through and counts its bytes.
private struct CountingWriter: ResponseBodyWriter {
    var inner: any ResponseBodyWriter
    let sent: ByteTally

    mutating func write(_ buffer: ByteBuffer) async throws {
        let bytes = buffer.readableBytes
        try await self.inner.write(buffer)
        self.sent.count.add(bytes, ordering: .relaxed)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await self.inner.finish(trailingHeaders)
    }
}

/// Bytes a body has sent so far.
private final class ByteTally: Sendable {
    let count = Atomic<Int>(0)
}
