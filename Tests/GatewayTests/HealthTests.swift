import Foundation
import Testing

struct HealthTests {
    @Test func healthyWhenTheDatabaseAnswersAndTheCacheIsWritable() async throws {
        let server = try await Shared.server.get()
        let result = try await curl(server.url("/health"))
        #expect(result.status == 200)
        #expect(result.json["database"] as? String == "ok")
        #expect(result.json["cache"] as? String == "ok")
    }

    @Test func unhealthyNamesTheDatabaseWhenItIsUnreachable() async throws {
        // Nothing listens on port 1; seeding is off so the server starts anyway.
        let server = try await TestServer.start(databaseURL: "postgresql://postgres@127.0.0.1:1/none", seed: false)
        defer { Task { await server.stop() } }
        let result = try await curl(server.url("/health"))
        #expect(result.status == 503)
        #expect(result.json["database"] as? String == "unreachable")
        #expect(result.json["cache"] as? String == "ok")
        // No export is acknowledged that the journal does not hold: 503, nothing started.
        let refused = try await curl(server.url("/exports/csv"), method: "POST")
        #expect(refused.status == 503)
        #expect(refused.headers["retry-after"] != nil)
        #expect(refused.json["error"] as? String == "unavailable")
        #expect(server.files(in: "partial").isEmpty && server.files(in: "objects").isEmpty)
    }

    @Test func unhealthyNamesTheCacheWhenItIsNotWritable() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        try FileManager.default.removeItem(atPath: server.cacheDirectory + "/partial")
        let result = try await curl(server.url("/health"))
        #expect(result.status == 503)
        #expect(result.json["cache"] as? String == "not writable")
        #expect(result.json["database"] as? String == "ok")
    }
}
