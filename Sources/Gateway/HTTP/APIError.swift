import Foundation
import HTTPTypes
import Hummingbird

/// Every error a client can see, and the one place that maps it to an HTTP
/// status. The body is JSON: `{"error": code, "message": …, "parameter": …}`;
/// messages are written for the client and never carry SQL or server detail.
struct APIError: HTTPResponseError, Sendable {
    private enum Code: String {
        case invalidParameter = "invalid_parameter"
        case notFound = "not_found"
        case unauthorized
        case forbidden
        case methodNotAllowed = "method_not_allowed"
        case queueFull = "queue_full"
        case tokenQueueFull = "token_queue_full"
        case tokenRateLimited = "token_rate_limited"
        case exportEvicted = "export_evicted"
        case tooManyExports = "too_many_exports"
        case unavailable
        case exportFailed = "export_failed"
        case exportCancelled = "export_cancelled"
        case exportExpired = "export_expired"
        case cacheFull = "cache_full"
        case fileGone = "file_gone"
        case unhealthy
        case internalError = "internal_error"
        case badRequest = "bad_request"
    }

    private let code: Code
    let status: HTTPResponse.Status
    let message: String
    private var parameter: String?
    private var allowed: [String]?
    private var headers: HTTPFields = [:]

    static func invalidParameter(_ error: ParameterError) -> APIError {
        var e = APIError(code: .invalidParameter, status: .badRequest, message: error.message)
        e.parameter = error.parameter
        e.allowed = error.allowed
        return e
    }

    static func notFound(_ message: String = "no such export") -> APIError {
        APIError(code: .notFound, status: .notFound, message: message)
    }

    /// 401: no token, or one that is not known. The body and headers are the
    /// same whichever token was tried, and never repeat it.
    static func unauthorized(tokenGiven: Bool) -> APIError {
        var e = APIError(code: .unauthorized, status: .unauthorized, message: tokenGiven ? "the bearer token is not valid" : "this needs an API token: Authorization: Bearer <token>")
        e.headers[.wwwAuthenticate] = tokenGiven ? "Bearer realm=\"csv-export-gateway\", error=\"invalid_token\"" : "Bearer realm=\"csv-export-gateway\""
        return e
    }

    /// 403 for a signed link that is altered, expired or for another export.
    /// Said the same way whether or not the export exists.
    static func badLink() -> APIError {
        APIError(code: .forbidden, status: .forbidden, message: "the download link is not valid or has expired; ask the export's status for a new one")
    }

    static func methodNotAllowed(allow: [String]) -> APIError {
        var e = APIError(code: .methodNotAllowed, status: .methodNotAllowed, message: "that method is not allowed here; allowed: \(allow.joined(separator: ", "))")
        e.headers[.allow] = allow.joined(separator: ", ")
        return e
    }

    static func queueFull(retryAfterSeconds: Int) -> APIError {
        var e = APIError(code: .queueFull, status: .tooManyRequests, message: "too many exports are queued; retry later")
        e.headers[.retryAfter] = String(retryAfterSeconds)
        return e
    }

    static func tokenQueueFull(limit: Int, retryAfterSeconds: Int) -> APIError {
        var e = APIError(
            code: .tokenQueueFull, status: .tooManyRequests, message: "this token has \(limit) exports waiting or running (TOKEN_MAX_ACTIVE_EXPORTS); retry when one has finished, or cancel one")
        e.headers[.retryAfter] = String(retryAfterSeconds)
        return e
    }

    static func tokenRateLimited(limit: Int, retryAfterSeconds: Int) -> APIError {
        var e = APIError(
            code: .tokenRateLimited, status: .tooManyRequests, message: "this token has asked for \(limit) exports in the last minute (TOKEN_CREATES_PER_MINUTE); retry after \(retryAfterSeconds) s")
        e.headers[.retryAfter] = String(retryAfterSeconds)
        return e
    }

    static func tooManyExports(retryAfterSeconds: Int) -> APIError {
        var e = APIError(code: .tooManyExports, status: .tooManyRequests, message: "too many exports are kept (MAX_EXPORTS); delete some or retry when older ones have expired")
        e.headers[.retryAfter] = String(retryAfterSeconds)
        return e
    }

    /// 503 with `Retry-After`: the request changed nothing and may be repeated.
    static func unavailable(_ message: String, retryAfterSeconds: Int) -> APIError {
        var e = APIError(code: .unavailable, status: .serviceUnavailable, message: message)
        e.headers[.retryAfter] = String(retryAfterSeconds)
        return e
    }

    static func journalUnavailable() -> APIError {
        .unavailable("the export journal cannot be written just now, so nothing was done; retry shortly", retryAfterSeconds: 2)
    }

    static func journalNotLoaded() -> APIError {
        .unavailable("the export records have not been read from the database yet; retry shortly", retryAfterSeconds: 2)
    }

    static func shuttingDown() -> APIError {
        .unavailable("the server is shutting down; retry on another instance or after it has restarted", retryAfterSeconds: 5)
    }

    static func exportFailed(_ message: String) -> APIError {
        let text = message.hasPrefix("the export failed") ? message : "the export failed: \(message)"
        return APIError(code: .exportFailed, status: .conflict, message: text)
    }

    static func exportCancelled() -> APIError {
        APIError(code: .exportCancelled, status: .gone, message: "the export was cancelled")
    }

    static func exportExpired() -> APIError {
        APIError(code: .exportExpired, status: .gone, message: "the export has expired (EXPORT_TTL); ask for it again")
    }

    static func exportEvicted() -> APIError {
        APIError(code: .exportEvicted, status: .gone, message: "the export's file was evicted from the full cache to make room for newer exports (CACHE_MAX_BYTES); ask for it again")
    }

    static func cacheFull(_ message: String = "the export cache is full and nothing in it can be evicted; retry when running exports have finished or been deleted") -> APIError {
        APIError(code: .cacheFull, status: HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage"), message: message)
    }

    static func fileGone() -> APIError {
        APIError(code: .fileGone, status: .gone, message: "the export's file is no longer in the cache")
    }

    /// Another status Hummingbird itself raised (e.g. a body too large), as JSON.
    static func http(_ status: HTTPResponse.Status) -> APIError {
        status.code >= 500 ? .internalError() : APIError(code: .badRequest, status: status, message: status.reasonPhrase)
    }

    static func internalError() -> APIError {
        APIError(code: .internalError, status: .internalServerError, message: "internal error")
    }

    private init(code: Code, status: HTTPResponse.Status, message: String) {
        self.code = code
        self.status = status
        self.message = message
    }

    private struct Body: Encodable {
        let error: String
        let message: String
        let parameter: String?
        let allowed: [String]?
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var response = try JSONBody.response(
            status: self.status,
            Body(error: self.code.rawValue, message: self.message, parameter: self.parameter, allowed: self.allowed)
        )
        response.headers.append(contentsOf: self.headers)
        return response
    }
}

/// JSON responses, with dates as RFC 3339 and keys in a stable order.
enum JSONBody {
    static func response(status: HTTPResponse.Status, _ value: some Encodable, headers: HTTPFields = [:]) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(RFC3339.string(from: date))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(value)
        data.append(UInt8(ascii: "\n"))
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// RFC 3339 timestamps in UTC with milliseconds.
enum RFC3339 {
    static func string(from date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: TimeZone(identifier: "UTC")!))
    }
}
