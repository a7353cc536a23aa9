import Foundation
import HTTPTypes
import Hummingbird

/// Who may do what: the API tokens, the signed links and the metrics
/// token, and the one decision of who a request acts for (`caller`).
///
/// - `/health`, `/openapi.json` and the page (`/`, `/ui/…`) are open to all.
/// - `/metrics` needs METRICS_TOKEN when it is set; else, when API tokens are
///   set, any API token (its counters tell of other owners' exports);
///   else it is open, as the API is.
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
    /// METRICS_TOKEN, when set.
    private let metricsToken: APITokens?

    init(tokens: APITokens, links: LinkSigner, allowAnonymous: Bool, metricsToken: String?) {
        self.tokens = tokens
        self.links = links
        self.allowAnonymous = allowAnonymous
        self.metricsToken = metricsToken.map { APITokens.single($0, id: "metrics") }
    }

    /// How the gateway is protected, as `/health` and the start-up log say it.
    var mode: String {
        if !self.tokens.isEmpty { return "tokens" }
        return self.allowAnonymous ? "open: no API tokens (ALLOW_ANONYMOUS)" : "open: no API tokens (loopback only)"
    }

    /// The path's segments as the router sees them (empty ones dropped:
    /// `//metrics/` is routed as `/metrics`), so the checks here match the
    /// route a request will reach.
    static func segments(_ path: String) -> [Substring] {
        path.split(separator: "/", omittingEmptySubsequences: true)
    }

    /// The last segment of the download paths a signed link opens.
    static let downloadForms = Set(DownloadResponder.Form.allCases.map { Substring($0.pathSegment) })

    /// Paths anyone may ask for: health, the API's description, and the
    /// page's static files (they hold nothing of anyone's; the page asks
    /// for a token before it calls the API).
    static func isPublic(_ segments: [Substring]) -> Bool {
        segments == ["health"] || segments == ["openapi.json"] || PageController.serves(segments)
    }

    static func isMetrics(_ segments: [Substring]) -> Bool {
        segments == ["metrics"]
    }

    /// Who `request` acts for on the export API, or the error that refuses it.
    func caller(for request: Request) throws(APIError) -> Caller {
        let raw = request.uri.path.split(separator: "/", omittingEmptySubsequences: false)
        if let query = request.uri.query, !query.isEmpty {
            // Exactly `/exports/<id>/download` (or `.csv`, `.csv.gz`, the same
            // download in one form): a link is judged on its exact bytes.
            let isDownload = raw.count == 4 && raw[0].isEmpty && raw[1] == "exports" && Self.downloadForms.contains(raw[3])
            if isDownload || Self.carriesLink(query) {
                let idText = isDownload ? String(raw[2]) : ""
                guard isDownload, self.links.verify(idText: idText, query: query), let id = UUID(uuidString: idText) else { throw APIError.badLink() }
                return .link(exportID: id)
            }
        }
        if self.tokens.isEmpty { return .open }
        let header = request.headers[.authorization]
        guard let owner = self.tokens.owner(authorization: header) else { throw APIError.unauthorized(tokenGiven: header != nil) }
        return .token(id: owner)
    }

    /// True when a query has a parameter named as a link's (`expires` or
    /// `signature`, in any case): a link changed anywhere else, in its path
    /// too, still carries one of them, and is judged (and refused) as a link.
    private static func carriesLink(_ query: String) -> Bool {
        query.split(separator: "&").contains { part in
            let name = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first?.lowercased() ?? ""
            return name == "expires" || name == "signature"
        }
    }

    /// Throws unless `request` may read `/metrics`.
    func checkMetrics(_ request: Request) throws(APIError) {
        // The metrics token when set, else the API's tokens when set, else none.
        let accepted = self.metricsToken ?? self.tokens
        let header = request.headers[.authorization]
        guard accepted.isEmpty || accepted.owner(authorization: header) != nil else { throw APIError.unauthorized(tokenGiven: header != nil) }
    }
}

/// Decides who each request acts for before it reaches a route, and stores
/// it in the context; the export routes refuse a request without a caller,
/// so a path that slips past the checks here is refused there too.
struct AccessMiddleware: RouterMiddleware {
    typealias Context = GatewayRequestContext
    let access: AccessControl

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let segments = AccessControl.segments(request.uri.path)
        if AccessControl.isPublic(segments) { return try await next(request, context) }
        if AccessControl.isMetrics(segments) {
            try self.access.checkMetrics(request)
            return try await next(request, context)
        }
        var context = context
        context.caller = try self.access.caller(for: request)
        return try await next(request, context)
    }
}
