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
/// - A request that carries a link (a download with a query, or any request
///   with `expires` or `signature` in its query) is judged on the link alone
///   (`LinkSigner`): a valid link acts for its export's download only;
///   anything else is 403, so a link altered anywhere, in its path too, is
///   refused the same way.
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
        let segments = request.uri.path.split(separator: "/", omittingEmptySubsequences: false)
        if let query = request.uri.query, !query.isEmpty {
            let isDownload = segments.count == 4 && segments[0].isEmpty && segments[1] == "exports" && segments[3] == "download"
            if isDownload || Self.carriesLink(query) {
                let idText = isDownload ? String(segments[2]) : ""
                guard isDownload, self.links.verify(idText: idText, query: query), let id = UUID(uuidString: idText) else { throw APIError.badLink() }
                return .link(exportID: id)
            }
        }
        if self.tokens.isEmpty { return .open }
        let header = request.headers[.authorization]
        guard let owner = self.tokens.owner(authorization: header) else { throw APIError.unauthorized(tokenGiven: header != nil) }
        return .token(id: owner)
    }

    /// True when a query has a link's parameter names in it (however spelled around them).
    private static func carriesLink(_ query: String) -> Bool {
        let lowered = query.lowercased()
        return lowered.contains("signature") || lowered.contains("expires")
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
