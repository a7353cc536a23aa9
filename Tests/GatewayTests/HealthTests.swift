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
        // An export there fails cleanly, with a message safe to show.
        let id = try #require(try await curl(server.url("/exports/csv"), method: "POST").json["exportId"] as? String)
        try await eventually("failure") { try await curl(server.url("/exports/\(id)/status")).json["status"] as? String == "failed" }
        #expect(try await curl(server.url("/exports/\(id)/status")).json["error"] as? String == "could not connect to the database")
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
