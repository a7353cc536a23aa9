import Crypto
import HTTPTypes
import Hummingbird
import NIOCore

/// The page for people at `/`: static HTML, CSS and a small script
/// (`Sources/Gateway/Resources/page/`, embedded in the binary at build time,
/// no build step, nothing fetched from elsewhere). It calls the same API as
/// every other client. Open to all: the files hold nothing of anyone's.
struct PageController: Sendable {
    private struct Asset: Sendable {
        let bytes: [UInt8]
        let contentType: String
        /// A strong validator, so a reload costs a 304.
        let etag: String

        init(_ bytes: [UInt8], _ contentType: String) {
            self.bytes = bytes
            self.contentType = contentType
            self.etag = "\"\(Hex.string(SHA256.hash(data: bytes)).prefix(32))\""
        }
    }

    private static let assets: [String: Asset] = [
        "/": Asset(PackageResources.page_html, "text/html; charset=utf-8"),
        "/ui/page.css": Asset(PackageResources.page_css, "text/css; charset=utf-8"),
        "/ui/page.js": Asset(PackageResources.page_js, "text/javascript; charset=utf-8"),
    ]

    /// True for the paths (as segments) this controller serves.
    static func serves(_ segments: [Substring]) -> Bool {
        Self.assets["/" + segments.joined(separator: "/")] != nil
    }

    /// Only this origin's own script and styles run; the page's API calls
    /// go to this origin; it is never framed (clickjacking the cancel
    /// buttons); a download link never leaks through a Referer.
    private static let securityHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        .cacheControl: "no-cache",
    ]

    func addRoutes(to router: Router<GatewayRequestContext>) {
        for (path, asset) in Self.assets {
            router.get(RouterPath(path)) { request, _ in Self.response(asset, request: request, body: true) }
            router.head(RouterPath(path)) { request, _ in Self.response(asset, request: request, body: false) }
        }
    }

    private static func response(_ asset: Asset, request: Request, body: Bool) -> Response {
        var headers = Self.securityHeaders
        headers[.eTag] = asset.etag
        if let ifNoneMatch = request.headers[.ifNoneMatch], DownloadResponder.matches(ifNoneMatch, etag: asset.etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = asset.contentType
        headers[.contentLength] = String(asset.bytes.count)
        return Response(status: .ok, headers: headers, body: body ? ResponseBody(byteBuffer: ByteBuffer(bytes: asset.bytes)) : ResponseBody())
    }
}
