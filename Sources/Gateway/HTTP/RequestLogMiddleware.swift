import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// One log line per request, when its response has been sent (or cut):
/// method, route (the template, e.g. `/exports/:id/download`, never the
/// path or query a client sent), status, body bytes sent, duration, the
/// request id, the export id, and whether the body was sent whole.
///
/// Nothing a client sends is logged verbatim except a well-formed
/// `X-Request-Id` (1 to 128 of `A-Z a-z 0-9 . _ -`), which is echoed so a
/// client can find its request; otherwise a new id is made. So no line holds
/// a token, a signature, a filter or any personal data.
///
/// The outermost middleware: it also turns errors into their responses, so
/// every response, errors included, carries `X-Request-Id` and is logged.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    static let requestIDHeader = HTTPField.Name("X-Request-Id")!
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var context = context
        let requestID = Self.requestID(request.headers[Self.requestIDHeader])
        context.requestID = requestID
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as any HTTPResponseError {
            response = try error.response(from: request, context: context)
        }
        response.headers[Self.requestIDHeader] = requestID
        var metadata: Logger.Metadata = [
            "gateway.http.method": "\(Self.method(request.method))",
            "gateway.http.route": "\(context.endpointPath ?? "unmatched")",
            "gateway.http.status": "\(response.status.code)",
            "gateway.http.request_id": "\(requestID)",
        ]
        if let id = Self.exportID(request.uri.path) ?? response.headers[ExportController.exportIDHeader] {
            metadata[LogKey.exportID] = "\(id)"
        }
        let logger = self.logger
        let line = metadata
        let body = response.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            let sent = ByteTally()
            var outcome = "complete"
            defer {
                var line = line
                line["gateway.http.bytes"] = "\(sent.count.load(ordering: .relaxed))"
                line["gateway.http.duration_ms"] = "\(Self.milliseconds(ContinuousClock.now - started))"
                line["gateway.http.outcome"] = "\(outcome)"
                logger.info("request", metadata: line)
            }
            do {
                try await body.write(CountingWriter(inner: writer, sent: sent))
            } catch {
                outcome = "aborted"
                throw error
            }
        }
        return response
    }

    /// The client's id if it is well formed, else a new one.
    static func requestID(_ given: String?) -> String {
        if let given, (1...128).contains(given.utf8.count), given.utf8.allSatisfy(Self.isIDByte) { return given }
        var random = SystemRandomNumberGenerator()
        return (0..<16).map { _ in String(UInt8.random(in: 0...15, using: &random), radix: 16) }.joined()
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
    private static func method(_ method: HTTPRequest.Method) -> String {
        [.get, .head, .post, .put, .delete, .options, .patch, .trace, .connect].contains(method) ? method.rawValue : "other"
    }

    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.1f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
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
