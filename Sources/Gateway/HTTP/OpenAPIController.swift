import Hummingbird
import NIOCore

/// `GET /openapi.json`: the API's OpenAPI 3.1 document
/// (`Sources/Gateway/Resources/openapi.json`, embedded in the binary at build time).
struct OpenAPIController: Sendable {
    func addRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/openapi.json") { _, _ in Self.document() }
        router.head("/openapi.json") { _, _ in ExportController.headersOnly(Self.document()) }
    }

    private static func document() -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-cache"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_json))
        )
    }
}
