import Hummingbird
import NIOCore

/// `GET /metrics`: every metric in Prometheus's text format (0.0.4), with
/// the gauges of state read from the manager at the moment of the scrape.
/// Protected by METRICS_TOKEN when set (`AccessMiddleware`).
struct MetricsController: Sendable {
    let manager: ExportManager

    func addRoutes(to router: Router<GatewayRequestContext>) {
        router.get("/metrics") { _, _ in
            Telemetry.setGauges(self.manager.metricsSnapshot())
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: Telemetry.render()))
            )
        }
    }
}
