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
        let contentType: String
        let identity: Form
        /// The same bytes gzipped once, at start (about a third of the
        /// size); nil if zlib failed, and then only the identity is sent.
        let gzip: Form?

        /// One representation: its bytes (a buffer each response shares,
        /// not a copy per request) and a strong validator of its own, so a
        /// reload costs a 304 whichever a client was sent.
        struct Form: Sendable {
            let body: ByteBuffer
            let etag: String

            init(_ bytes: [UInt8]) {
                self.body = ByteBuffer(bytes: bytes)
                self.etag = "\"\(Hex.string(SHA256.hash(data: bytes)).prefix(32))\""
            }
        }

        init(_ bytes: [UInt8], _ contentType: String) {
            self.contentType = contentType
            self.identity = Form(bytes)
            self.gzip = (try? Self.gzipped(bytes)).map(Form.init)
        }

        private static func gzipped(_ bytes: [UInt8]) throws -> [UInt8] {
            let stream = try GzipStream(level: 9)
            var out = try stream.compress(ByteBuffer(bytes: bytes))
            for var buffer in try stream.finish() { out.writeBuffer(&buffer) }
            return Array(out.readableBytesView)
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
        headers[.vary] = "Accept-Encoding"
        var form = asset.identity
        if let gzip = asset.gzip, AcceptEncoding.prefersGzip(request.headers[.acceptEncoding]) {
            form = gzip
            headers[.contentEncoding] = "gzip"
        }
        headers[.eTag] = form.etag
        if let ifNoneMatch = request.headers[.ifNoneMatch], DownloadResponder.matches(ifNoneMatch, etag: form.etag) {
            headers[.contentEncoding] = nil
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = asset.contentType
        headers[.contentLength] = String(form.body.readableBytes)
        return Response(status: .ok, headers: headers, body: body ? ResponseBody(byteBuffer: form.body) : ResponseBody())
    }
}
