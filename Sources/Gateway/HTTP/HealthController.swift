import Cache
import Hummingbird
import NIOPosix

/// `GET /health`: 200 when the database answers and the cache directory is
/// writable, else 503; the JSON says which part is unhealthy. Both probes
/// block, so they run on the thread pool.
struct HealthController: Sendable {
    let databaseURL: String
    let store: ContentStore
    var threadPool: NIOThreadPool = .singleton

    private struct Body: Encodable {
        let status: String
        let database: String
        let cache: String
    }

    func addRoutes(to router: Router<some RequestContext>) {
        router.get("/health") { _, _ in try await self.check() }
    }

    func check() async throws -> Response {
        let url = Self.withConnectTimeout(self.databaseURL)
        let store = self.store
        async let database = self.threadPool.runIfActive { () -> Bool in
            guard let db = try? PostgresConnection(url: url) else { return false }
            defer { db.close() }
            return (try? db.execute("SELECT 1")) != nil
        }
        async let cache = self.threadPool.runIfActive { store.isWritable() }
        let (databaseOK, cacheOK) = try await (database, cache)
        let body = Body(status: databaseOK && cacheOK ? "ok" : "unhealthy", database: databaseOK ? "ok" : "unreachable", cache: cacheOK ? "ok" : "not writable")
        return try JSONBody.response(status: databaseOK && cacheOK ? .ok : .serviceUnavailable, body, headers: [.cacheControl: "no-store"])
    }

    /// Health must answer quickly even when the database host does not.
    static func withConnectTimeout(_ url: String) -> String {
        if url.contains("connect_timeout") { return url }
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            return url + (url.contains("?") ? "&" : "?") + "connect_timeout=3"
        }
        return url + " connect_timeout=3"
    }
}
