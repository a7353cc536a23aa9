import Cache
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix

/// Everything the gateway needs before it serves: the cache prepared (crash
/// debris removed) and the `users` table seeded when empty. Blocking work,
/// run on the thread pools.
func prepareStorage(_ configuration: Configuration, pools: BlockingPools, logger: Logger) async throws -> ContentStore {
    let store = ContentStore(root: configuration.cache.directory, instance: configuration.cluster.instanceID)
    let removed = try await pools.files.runIfActive { try store.prepare() }
    if removed > 0 { logger.notice("removed partial files left by an earlier run", metadata: [LogKey.cacheRemoved: "\(removed)"]) }
    if configuration.database.seed {
        let seeder = Seeder(database: configuration.database.settings, rows: configuration.database.seedRows, logger: logger)
        _ = try await pools.database.runIfActive { try seeder.seedIfEmpty() }
    }
    return store
}

/// CACHE_MAX_BYTES, or its default: half of what the cache could have at
/// start, the free space of its filesystem plus the files already in it (so
/// the bound stays put across restarts, and the disk keeps half its room).
func cacheLimit(_ configuration: Configuration, store: ContentStore) -> Int {
    if let bytes = configuration.cache.maxBytes { return bytes }
    let inCache = store.objectNames().reduce(0) { total, name in
        let size = (try? FileManager.default.attributesOfItem(atPath: store.objectsDirectory + "/" + name))?[.size] as? Int ?? 0
        return total + size
    }
    guard let free = store.freeBytes() else { return 0 }
    return max(1 << 20, (free / 2).addingReportingOverflow(inCache / 2).partialValue)
}

/// The routes, behind (outermost first) the request log and metrics, the
/// error mapping and the access check.
func buildRouter(manager: ExportManager, health: HealthProbe, buffers: ReadBufferPool, access: AccessControl, configuration: Configuration, logger: Logger) -> Router<GatewayRequestContext> {
    let router = Router(context: GatewayRequestContext.self)
    router.add(middleware: RequestLogMiddleware(logger: logger, metrics: RequestMetrics()))
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: AccessMiddleware(access: access))
    let downloads = DownloadResponder(manager: manager, buffers: buffers, rangeWait: .seconds(configuration.exports.rangeWaitSeconds))
    ExportController(manager: manager, downloads: downloads, links: access.links).addRoutes(to: router)
    HealthController(probe: health, access: access.mode, journalLoaded: { manager.isJournalLoaded }).addRoutes(to: router)
    MetricsController(manager: manager).addRoutes(to: router)
    OpenAPIController().addRoutes(to: router)
    PageController().addRoutes(to: router)
    return router
}

/// The access rules, with the link-signing key (SIGNING_KEY, or the one kept
/// in the cache folder, made on first start). Blocking: run on a thread pool.
func buildAccessControl(_ configuration: Configuration) throws -> AccessControl {
    let access = configuration.access
    let key = try SigningKey.load(configured: access.signingKey, cacheDirectory: configuration.cache.directory)
    return AccessControl(
        tokens: access.tokens,
        links: LinkSigner(key: key, lifetime: TimeInterval(access.linkTTLSeconds)),
        allowAnonymous: access.allowAnonymous,
        metricsToken: access.metricsToken
    )
}

/// The gateway: the HTTP server, the export manager, its services (gzip,
/// the cluster's loops, the janitor) and the thread pools in one service
/// group (the manager stops after the server, the pools last),
/// and the manager itself, which a shutdown must reach before the server
/// waits for its connections (`GatewayMain`).
struct Gateway<App: ApplicationProtocol> {
    let application: App
    let manager: ExportManager
    let connections: ConnectionCounter
}

func buildApplication(
    _ configuration: Configuration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> Gateway<some ApplicationProtocol> {
    // Before any metric is made: see `Telemetry`.
    Telemetry.prepare()
    let pools = BlockingPools(compressionThreads: configuration.exports.gzipWorkers)
    let store: ContentStore
    let access: AccessControl
    do {
        store = try await prepareStorage(configuration, pools: pools, logger: logger)
        access = try await pools.files.runIfActive { try buildAccessControl(configuration) }
    } catch {
        // The pools' threads must not outlive a start that failed.
        await pools.shutdown()
        throw error
    }
    if access.tokens.isEmpty {
        logger.warning("no API tokens: anyone who can reach the server may export and download everything", metadata: [LogKey.access: "\(access.mode)"])
    } else {
        logger.info("API tokens required", metadata: [LogKey.accessTokens: "\(access.tokens.tokens.count)"])
    }
    let limit = try await pools.files.runIfActive { cacheLimit(configuration, store: store) }
    logger.info("cache bound", metadata: [LogKey.cacheMaxBytes: "\(limit == 0 ? "none" : String(limit))"])
    let journal = ExportJournal(settings: configuration.database.journalSettings, logger: logger)
    let manager = ExportManager(configuration: configuration, cacheMaxBytes: limit, store: store, journal: journal, pools: pools, logger: logger)
    // The exports of an earlier run of the gateway. If the journal cannot be
    // read now, the gateway serves anyway (health says why) and the manager
    // tries again every few seconds; until then every export request is a
    // 503, never a 404 for an id the journal holds.
    await manager.loadJournal(atStart: true)
    let http = configuration.http
    let buffers = ReadBufferPool(limit: http.downloadBufferBytes)
    let limits = GatewayHTTPServer.Limits(
        maxConnections: http.maxConnections,
        headerTimeout: .seconds(Int64(http.requestHeaderTimeoutSeconds)),
        keepAliveTimeout: .seconds(Int64(http.keepAliveTimeoutSeconds)),
        maxHeaderBytes: http.maxHeaderBytes,
        sendTimeout: .seconds(Int64(http.sendTimeoutSeconds))
    )
    let health = HealthProbe(database: configuration.database.settings, store: store, pools: pools)
    let connections = ConnectionCounter()
    let application = Application(
        router: buildRouter(manager: manager, health: health, buffers: buffers, access: access, configuration: configuration, logger: logger),
        server: GatewayHTTPServer.builder(limits: limits, connections: connections),
        configuration: .init(
            address: .hostname(http.host, port: http.port),
            serverName: "csv-export-gateway",
            availableConnectionsDelegate: GatewayHTTPServer.availableConnections(limits, logger: logger)
        ),
        // Shut down in reverse: the loops and the janitor first, the pools last.
        services: [
            pools, manager, manager.gzip,
            ClusterCoordinator(manager: manager, settings: configuration.database.settings, logger: logger),
            Janitor(manager: manager), MemoryTrimmer(pools: pools),
        ],
        onServerRunning: onServerRunning,
        logger: logger
    )
    return Gateway(application: application, manager: manager, connections: connections)
}
