import HTTPTypes
import Hummingbird
import Logging

/// Turns every error into the JSON of `APIError`: the router's own 404s and
/// 405s, and anything unexpected, which is logged and answered 500 without
/// detail. Errors thrown while a body is streaming are not caught here: they
/// abort the connection, which is what a live download must do.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as any HTTPResponseError {
            switch error.status {
            case .notFound: throw APIError.notFound("no such resource: \(request.method) \(request.uri.path)")
            case .methodNotAllowed: throw APIError.methodNotAllowed()
            default: throw error
            }
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)"])
            throw APIError.internalError()
        }
    }
}
