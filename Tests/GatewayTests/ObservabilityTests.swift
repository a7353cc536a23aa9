import Foundation
import Testing

@testable import Gateway

/// What machines read: `/metrics` (parsed by prometheus_client's parser),
/// one log line per request with no secret and no personal data in any, and
/// the OpenAPI document, validated and fuzzed by Schemathesis against a live
/// server. The Python tools come from PyPI into a venv that scripts/test.sh
/// makes (`TEST_PYTHON_TOOLS`, its bin folder).
@Suite(.serialized) struct ObservabilityTests {
    static func tool(_ name: String) throws -> String {
        let folder = ProcessInfo.processInfo.environment["TEST_PYTHON_TOOLS"] ?? ""
        let path = folder + "/" + name
        try #require(FileManager.default.isExecutableFile(atPath: path), "\(name) is missing: run the tests with scripts/test.sh, which installs it")
        return path
    }

    static let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts").path
    static let metricsToken = "metrics-reader-0123456789"

    /// Every sample of a scrape, as prometheus_client parses it.
    static func scrape(_ server: TestServer) async throws -> [String: Double] {
        let result = try await curl(server.url("/metrics"), AccessTests.bearer(Self.metricsToken))
        #expect(result.status == 200)
        #expect(result.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let file = NSTemporaryDirectory() + "metrics-\(UUID().uuidString).txt"
        try result.body.write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let parsed = try await run("/bin/sh", ["-c", "\"$0\" \"$1\" < \"$2\"", try Self.tool("python"), Self.scripts + "/metrics.py", file])
        #expect(parsed.status == 0, "\(parsed.stderr)")
        return (try JSONSerialization.jsonObject(with: parsed.stdout) as? [String: Double]) ?? [:]
    }

    /// The sum of the samples named `name` whose labels contain all of `labels`.
    static func value(_ samples: [String: Double], _ name: String, _ labels: [String] = []) -> Double {
        samples.filter { key, _ in key.hasPrefix(name + "{") && labels.allSatisfy { key.contains($0) } }.values.reduce(0, +)
    }

    @Test(.timeLimit(.minutes(2)))
    func metricsCountExportsDownloadsAndRequests() async throws {
        let server = try await AccessTests.server(rows: 3000) { $0.access.metricsToken = Self.metricsToken }
        defer { Task { await server.stop() } }
        // However the path is spelled for the router, the metrics token is asked for.
        for path in ["/metrics", "/metrics/", "//metrics", "//metrics//"] {
            #expect(try await curl(server.url(path)).status == 401, "\(path)")
            #expect(try await curl(server.url(path), AccessTests.bearer(AccessTests.alice)).status == 401, "\(path)")
        }
        #expect(try await curl(server.url("/health/")).status == 200)
        // Without a metrics token, API tokens guard /metrics (its counters tell of other owners' exports).
        let guarded = try await AccessTests.server(rows: 100)
        #expect(try await curl(guarded.url("/metrics")).status == 401)
        #expect(try await curl(guarded.url("/metrics"), AccessTests.bearer(AccessTests.bob)).status == 200)
        await guarded.stop()
        let before = try await Self.scrape(server)

        let (id, link, bytes) = try await SignedLinkTests.completed(server, query: "subscription_tier=pro")
        let rows = try #require(try await curl(server.url("/exports/\(id)/status"), AccessTests.bearer(AccessTests.alice)).json["rowsWritten"] as? Int)
        let gzip = try await curl(server.url(link), ["-H", "Accept-Encoding: gzip"])
        #expect(gzip.headers["content-encoding"] == "gzip")
        #expect(try await curl(server.url("/exports/\(UUID().uuidString.lowercased())/status"), AccessTests.bearer(AccessTests.alice)).status == 404)
        let after = try await Self.scrape(server)

        func delta(_ name: String, _ labels: [String] = []) -> Double { Self.value(after, name, labels) - Self.value(before, name, labels) }
        #expect(delta("gateway_export_bytes_total") >= Double(bytes.count))
        #expect(delta("gateway_download_bytes_total") >= Double(bytes.count + gzip.body.count))
        #expect(delta("gateway_export_rows_total") >= Double(rows))
        #expect(delta("gateway_gzip_forms_total") >= 1)
        #expect(delta("gateway_export_duration_seconds_count") >= 1)
        #expect(Self.value(after, "gateway_exports", ["state=\"completed\""]) >= 1)
        for gauge in [
            "gateway_export_queue_depth", "gateway_export_workers_busy", "gateway_export_workers", "gateway_cache_bytes", "gateway_live_readers", "gateway_journal_write_failures_total",
            "gateway_cache_evictions_total",
        ] {
            #expect(after.keys.contains { $0.hasPrefix(gauge + "{") }, "\(gauge)")
        }
        #expect(Self.value(after, "gateway_cache_bytes") >= Double(bytes.count))
        // Exposed as the counter `hb_requests`; prometheus_client names its samples `…_total`.
        #expect(delta("hb_requests_total", ["http_route=\"/exports/{id}/status\"", "http_response_status_code=\"200\""]) >= 1)
        #expect(delta("hb_requests_total", ["http_route=\"/exports/{id}/status\"", "http_response_status_code=\"404\""]) >= 1)
        #expect(delta("http_server_request_duration_count", ["http_route=\"/exports/{id}/download\""]) >= 2)
        _ = id
    }

    @Test(.timeLimit(.minutes(2)))
    func everyRequestIsLoggedOnceWithItsIdAndNoSecretOrPersonalData() async throws {
        let log = CapturedLog()
        let server = try await AccessTests.server(rows: 2000, log: log)
        defer { Task { await server.stop() } }
        let (id, link, bytes) = try await SignedLinkTests.completed(server, query: "country_code=US&min_ltv=10")
        #expect(String(decoding: bytes, as: UTF8.self).contains("@example."))
        let traced = try await curl(server.url("/exports/\(id)/status"), ["-H", "X-Request-Id: trace-42.a_b"] + AccessTests.bearer(AccessTests.alice))
        #expect(traced.headers["x-request-id"] == "trace-42.a_b")
        let odd = try await curl(server.url("/exports/\(id)/status"), ["-H", "X-Request-Id: has space@example.com"] + AccessTests.bearer(AccessTests.alice))
        let made = try #require(odd.headers["x-request-id"])
        #expect(made != "has space@example.com" && made.utf8.count == 16)
        _ = try await curl(server.url(link), ["-H", "Range: bytes=0-9"])
        _ = try await curl(server.url("/exports/\(id)/download?expires=1&signature=\(String(repeating: "ab", count: 32))"))
        _ = try await curl(server.url("/exports/csv?country_code=US"), method: "POST", AccessTests.bearer("wrong-token-but-long-enough"))
        _ = try await curl(server.url("/exports/csv?full_name=someone@example.com"), method: "POST", AccessTests.bearer(AccessTests.alice))

        try await eventually("the log lines of the last requests") { log.lines.filter { $0.contains(" request ") }.count >= 8 }
        let lines = log.lines
        let requests = lines.filter { $0.hasPrefix("info request ") }
        let tracedLine = try #require(requests.first { $0.contains("gateway.http.request_id=trace-42.a_b") })
        for field in [
            "gateway.http.method=GET", "gateway.http.route=/exports/{id}/status", "gateway.http.status=200", "gateway.export.id=\(id)", "gateway.http.bytes=", "gateway.http.duration_ms=",
            "gateway.http.outcome=complete",
        ] {
            #expect(tracedLine.contains(field), "\(field) in \(tracedLine)")
        }
        #expect(requests.contains { $0.contains("gateway.http.status=206") && $0.contains("gateway.http.bytes=10 ") })
        #expect(requests.contains { $0.contains("gateway.http.status=401") })
        #expect(requests.contains { $0.contains("gateway.http.status=403") })
        #expect(requests.contains { $0.contains("gateway.http.status=400") })
        let signature = String(link.split(separator: "=").last ?? "")
        for secret in [AccessTests.alice, AccessTests.bob, "wrong-token-but-long-enough", signature, "signature=", "expires=", "@example", "someone", "min_ltv", "country_code=US"] {
            #expect(!lines.contains { $0.contains(secret) }, "\(secret) in the log")
        }
    }

    @Test(.timeLimit(.minutes(4)))
    func theOpenAPIDocumentIsValidAndALiveServerKeepsToIt() async throws {
        let server = try await AccessTests.server(rows: 500) { $0.access.metricsToken = Self.metricsToken }
        defer { Task { await server.stop() } }
        let served = try await curl(server.url("/openapi.json"))
        #expect(served.status == 200 && served.headers["content-type"]?.hasPrefix("application/json") == true)
        let document = try #require(try JSONSerialization.jsonObject(with: served.body) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: Any])
        for path in ["/exports/csv", "/exports/{exportId}/status", "/exports/{exportId}/download", "/exports/{exportId}", "/health", "/metrics", "/openapi.json"] {
            #expect(paths[path] != nil, "\(path) is documented")
        }
        let file = try temporaryDirectory("openapi") + "/openapi.json"
        try served.body.write(to: URL(fileURLWithPath: file))
        let validated = try await run(try Self.tool("openapi-spec-validator"), [file])
        #expect(validated.status == 0, "\(validated.text)\(validated.stderr)")

        // Bounded: a few examples per operation and a minute in all.
        let checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"
        // Run in a folder of its own: Schemathesis keeps a cache in its working folder.
        let fuzz = try await run(
            "/bin/sh",
            [
                "-c", "cd \"$0\" && exec \"$@\"", try temporaryDirectory("schemathesis"), try Self.tool("schemathesis"),
                "run", server.url("/openapi.json"), "--checks", checks, "--max-examples", "25", "--max-time", "60", "--workers", "2",
                "--seed", "7", "--no-color", "--generation-database", "none", "--request-timeout", "20",
                "-H", "Authorization: Bearer \(AccessTests.alice)",
                // Its HTTP client asks for gzip and then cannot decode a 206 that
                // holds a range of the gzip form (valid HTTP: ranges apply to the
                // encoded representation, which is what `curl -C -` resumes).
                "-H", "Accept-Encoding: identity",
            ])
        #expect(fuzz.status == 0, "\(fuzz.text.suffix(6000))\(fuzz.stderr.suffix(2000))")
        #expect(try await curl(server.url("/health")).status == 200)
    }
}
