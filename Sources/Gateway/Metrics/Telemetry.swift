import CoreMetrics
import Metrics
import Prometheus
import Synchronization

/// The gateway's metrics, kept with swift-metrics and rendered by
/// swift-prometheus at `GET /metrics` (`MetricsController`).
///
/// The registry is bootstrapped once per process, before any metric is
/// made (every metric here asks for it first): a metric made before the
/// bootstrap would count into nothing for good. Counters count as things
/// happen; the gauges of state (exports by state, queue, workers, cache) are
/// set from the manager when scraped, so they cannot drift.
enum Telemetry {
    /// The process's Prometheus registry; touching it bootstraps swift-metrics.
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Exports take seconds to many minutes; the default buckets end at 10 s.
        factory.durationHistogramBuckets["gateway_export_duration_seconds"] =
            [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600].map { Duration.seconds($0) }
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    private static func counter(_ label: String) -> Metrics.Counter {
        _ = Self.registry
        return Metrics.Counter(label: label)
    }

    static let rowsExported = Self.counter("gateway_export_rows_total")
    static let bytesExported = Self.counter("gateway_export_bytes_total")
    static let downloadBytes = Self.counter("gateway_download_bytes_total")
    static let evictions = Self.counter("gateway_cache_evictions_total")
    static let gzipFormsMade = Self.counter("gateway_gzip_forms_total")
    static let journalWriteFailures = Self.counter("gateway_journal_write_failures_total")
    static let exportDuration: Metrics.Timer = {
        _ = Self.registry
        return Metrics.Timer(label: "gateway_export_duration_seconds", preferredDisplayUnit: .seconds)
    }()

    /// Bootstraps the registry and makes every counter, so that a scrape
    /// shows each from the start (a counter that has not counted yet reads 0
    /// rather than missing).
    static func prepare() {
        _ = (Self.rowsExported, Self.bytesExported, Self.downloadBytes, Self.evictions, Self.gzipFormsMade, Self.journalWriteFailures, Self.exportDuration)
    }

    /// Live downloads being sent now (of exports still being written).
    static let liveReaders = Atomic<Int>(0)

    /// Sets the gauges of state; called when `/metrics` is scraped.
    static func setGauges(_ snapshot: ExportManager.MetricsSnapshot) {
        _ = Self.registry
        for status in ExportLifecycle.Status.allCases {
            Metrics.Gauge(label: "gateway_exports", dimensions: [("state", status.rawValue)]).record(snapshot.exportsByState[status] ?? 0)
        }
        Metrics.Gauge(label: "gateway_export_queue_depth").record(snapshot.queued)
        Metrics.Gauge(label: "gateway_export_workers_busy").record(snapshot.running)
        Metrics.Gauge(label: "gateway_export_workers").record(snapshot.workers)
        Metrics.Gauge(label: "gateway_cache_bytes").record(snapshot.cacheBytes)
        Metrics.Gauge(label: "gateway_live_readers").record(Self.liveReaders.load(ordering: .relaxed))
    }

    /// The Prometheus text exposition of every metric.
    static func render() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        Self.registry.emit(into: &buffer)
        return buffer
    }
}
