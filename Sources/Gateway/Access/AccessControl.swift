import Crypto
import Foundation
import HTTPTypes
import Hummingbird

/// Who may do what: the API tokens, the signed links and the metrics
/// token, and the one decision of who a request acts for (`caller`).
///
/// - `/health` and `/openapi.json` are open to all.
/// - `/metrics` needs METRICS_TOKEN when it is set.
/// - Everything else (the `/exports…` API) needs a known API token when
///   tokens are configured; without tokens it is open (loopback or
///   ALLOW_ANONYMOUS, see `Configuration`).
/// - A download with a query is a signed link and is judged on the link
///   alone (`LinkSigner`): valid, it acts for that export only; otherwise 403.
struct AccessControl: Sendable {
    let tokens: APITokens
    let links: LinkSigner
    let allowAnonymous: Bool
    /// SHA-256 of METRICS_TOKEN, when set.
    private let metricsTokenDigest: [UInt8]?

    init(tokens: APITokens, links: LinkSigner, allowAnonymous: Bool, metricsToken: String?) {
        self.tokens = tokens
        self.links = links
        self.allowAnonymous = allowAnonymous
        self.metricsTokenDigest = metricsToken.map { Array(SHA256.hash(data: Array($0.utf8))) }
    }

    /// How the gateway is protected, as `/health` and the start-up log say it.
    var mode: String {
        if !self.tokens.isEmpty { return "tokens" }
        return self.allowAnonymous ? "open: no API tokens (ALLOW_ANONYMOUS)" : "open: no API tokens (loopback only)"
    }

    /// Paths anyone may ask for.
    static func isPublic(_ path: String) -> Bool {
        path == "/health" || path == "/openapi.json"
    }

    /// Who `request` acts for on the export API, or the error that refuses it.
    func caller(for request: Request) throws(APIError) -> Caller {
        let segments = request.uri.path.split(separator: "/", omittingEmptySubsequences: true)
        if segments.count == 3, segments[0] == "exports", segments[2] == "download", let query = request.uri.query, !query.isEmpty {
            let idText = String(segments[1])
            guard self.links.verify(idText: idText, query: query), let id = UUID(uuidString: idText) else { throw APIError.badLink() }
            return .link(exportID: id)
        }
        if self.tokens.isEmpty { return .open }
        let header = request.headers[.authorization]
        guard let owner = self.tokens.owner(authorization: header) else { throw APIError.unauthorized(tokenGiven: header != nil) }
        return .token(id: owner)
    }

    /// Throws unless `request` may read `/metrics`.
    func checkMetrics(_ request: Request) throws(APIError) {
        guard let expected = self.metricsTokenDigest else { return }
        let header = request.headers[.authorization]
        let presented = header.flatMap(APITokens.bearerToken).map { Array(SHA256.hash(data: Array($0.utf8))) } ?? []
        var difference: UInt8 = presented.count == expected.count ? 0 : 1
        for (a, b) in zip(expected, presented) { difference |= a ^ b }
        guard difference == 0 else { throw APIError.unauthorized(tokenGiven: header != nil) }
    }
}

/// Decides who each request acts for before it reaches a route, and stores
/// it in the context; the export routes refuse a request without a caller,
/// so a path that slips past the checks here is refused there too.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let access: AccessControl

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if AccessControl.isPublic(path) { return try await next(request, context) }
        if path == "/metrics" {
            try self.access.checkMetrics(request)
            return try await next(request, context)
        }
        var context = context
        context.caller = try self.access.caller(for: request)
        return try await next(request, context)
    }
}
