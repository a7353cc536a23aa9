import Cache
import Hummingbird
import Logging
import NIOCore
import NIOPosix

/// Everything the gateway needs before it serves: the cache prepared (crash
/// debris removed) and the `users` table seeded when empty. Blocking work,
/// run on the thread pool.
func prepareStorage(_ configuration: Configuration, logger: Logger) async throws -> ContentStore {
    let store = ContentStore(root: configuration.cache.directory)
    let removed = try await NIOThreadPool.singleton.runIfActive { try store.prepare() }
    if removed > 0 { logger.notice("removed partial files left by an earlier run", metadata: ["gateway.cache.removed": "\(removed)"]) }
    if configuration.database.seed {
        let seeder = Seeder(databaseURL: configuration.database.url, rows: configuration.database.seedRows, logger: logger)
        _ = try await NIOThreadPool.singleton.runIfActive { try seeder.seedIfEmpty() }
    }
    return store
}

func buildRouter(manager: ExportManager, configuration: Configuration) -> Router<BasicRequestContext> {
    let router = Router()
    router.add(middleware: ErrorMiddleware())
    let downloads = DownloadResponder(manager: manager, rangeWait: .seconds(configuration.exports.rangeWaitSeconds))
    ExportController(manager: manager, downloads: downloads).addRoutes(to: router)
    HealthController(databaseURL: configuration.database.url, store: manager.store).addRoutes(to: router)
    return router
}

/// The application: the HTTP server and the export manager in one service
/// group (the manager stops after the server, cancelling what still runs).
func buildApplication(
    _ configuration: Configuration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let store = try await prepareStorage(configuration, logger: logger)
    let journal = ExportJournal(databaseURL: configuration.database.url, logger: logger)
    let manager = ExportManager(configuration: configuration, store: store, journal: journal, logger: logger)
    // The exports of an earlier run of the gateway. Without a database the
    // gateway still starts (health says why); exports then fail cleanly.
    do {
        let records = try await NIOThreadPool.singleton.runIfActive { try journal.load() }
        let (restored, requeued) = try await NIOThreadPool.singleton.runIfActive { manager.restore(records) }
        if restored > 0 { logger.notice("restored exports from the journal", metadata: ["gateway.journal.exports": "\(restored)", "gateway.journal.requeued": "\(requeued)"]) }
    } catch {
        logger.error("could not read the export journal", metadata: ["error": "\(errorDetails(error))"])
    }
    return Application(
        router: buildRouter(manager: manager, configuration: configuration),
        configuration: .init(address: .hostname(configuration.http.host, port: configuration.http.port), serverName: "csv-export-gateway"),
        services: [manager],
        onServerRunning: onServerRunning,
        logger: logger
    )
}
