import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// Turns every error into the JSON response of `APIError`: the router's own
/// 404s and 405s, and anything unexpected, which is logged and answered 500
/// without detail. It answers rather than rethrows, so the middleware around
/// it (request metrics, the request log) see every error as the response it
/// is, with its status and duration. Errors thrown while a body is streaming
/// are not caught here: they abort the connection, which is what a live
/// download must do.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return try Self.apiError(for: error, request: request, context: context).response(from: request, context: context)
        }
    }

    private static func apiError(for error: any Error, request: Request, context: Context) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as any HTTPResponseError where error.status == .notFound || error.status == .methodNotAllowed:
            // A known path asked with another method is a 405 that says which ones work.
            if let allowed = Self.allowedMethods(request.uri.path) { return APIError.methodNotAllowed(allow: allowed) }
            return APIError.notFound("no such resource: \(request.method) \(request.uri.path)")
        case let error as any HTTPResponseError:
            return APIError.http(error.status)
        default:
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            return APIError.internalError()
        }
    }

    /// The methods of the API's paths (the routes of `ExportController` and
    /// `HealthController`); nil for a path that is none of them.
    static func allowedMethods(_ path: String) -> [String]? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        switch Array(parts) {
        case ["exports", "csv"]: return ["GET", "POST"]
        case ["metrics"]: return ["GET"]
        case ["exports"], ["health"], ["openapi.json"]: return ["GET", "HEAD"]
        case _ where PageController.serves(AccessControl.segments(path)): return ["GET", "HEAD"]
        case let p
        where p.count == 3 && p[0] == "exports" && UUID(uuidString: String(p[1])) != nil
            && (p[2] == "status" || AccessControl.downloadForms.contains(p[2])):
            return ["GET", "HEAD"]
        case let p where p.count == 2 && p[0] == "exports" && UUID(uuidString: String(p[1])) != nil:
            return ["DELETE"]
        default: return nil
        }
    }
}
