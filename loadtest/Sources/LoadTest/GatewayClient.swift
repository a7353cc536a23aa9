import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// The gateway's API as the load test uses it: one `HTTPClient`, the token
/// on every `/exports` request, each answer counted and timed, every 5xx
/// and transport failure recorded where it happens. Failures that come from
/// the run's own time limit (the task is cancelled) are left to the session,
/// which counts one `timeout`.
struct GatewayClient: Sendable {
    let http: HTTPClient
    let settings: Settings
    let recorder: Recorder
    /// The run's hard end; no request outlives it.
    let deadline: NIODeadline

    /// A small answer (JSON, an error), read whole.
    struct Reply: Sendable {
        let code: Int
        let headers: HTTPHeaders
        let body: ByteBuffer

        var text: String { String(buffer: self.body) }
    }

    func url(_ path: String) -> String {
        path.hasPrefix("http://") || path.hasPrefix("https://") ? path : self.settings.base + path
    }

    /// A path for messages: a signed link's query stays out of the output.
    static func shown(_ path: String) -> String {
        guard path.contains("signature="), let q = path.firstIndex(of: "?") else { return path }
        return String(path[..<q]) + "?<signed>"
    }

    func request(_ method: HTTPMethod, _ path: String, authorize: Bool = true, headers: [(String, String)] = []) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: self.url(path))
        request.method = method
        if authorize, let token = self.settings.token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        return request
    }

    /// Sends a request whose answer is small and reads it whole.
    func send(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], operation: Operation?) async -> Reply? {
        let started = ContinuousClock.now
        do {
            let response = try await self.http.execute(self.request(method, path, headers: headers), deadline: self.deadline)
            let body = try await response.body.collect(upTo: 4 << 20)
            if let operation { self.recorder.record(operation, .now - started) }
            self.recorder.requestAnswered()
            let reply = Reply(code: Int(response.status.code), headers: response.headers, body: body)
            if reply.code >= 500 { self.recorder.error(.http5xx, "\(method) \(Self.shown(path)): \(reply.code) \(reply.text.prefix(200))") }
            return reply
        } catch {
            if !Task.isCancelled { self.recorder.error(.transport, "\(method) \(Self.shown(path)): \(error)") }
            return nil
        }
    }

    /// Status JSON, checked against the API's rules.
    func decodeStatus(_ reply: Reply, what: String, expectedId: String? = nil) -> ExportStatus? {
        guard let status = try? JSONDecoder().decode(ExportStatus.self, from: Data(reply.body.readableBytesView)) else {
            self.recorder.error(.statusInvalid, "\(what): status JSON does not parse: \(reply.text.prefix(200))")
            return nil
        }
        let problems = status.problems(expectedId: expectedId)
        if !problems.isEmpty { self.recorder.error(.statusInvalid, "\(what) \(status.exportId): \(problems.joined(separator: "; "))") }
        return status
    }

    /// `POST /exports/csv?query`: the new export's status, or nil (refused
    /// with 429, which is counted, or a failure, which is recorded).
    func create(_ query: String, noCache: Bool = false) async -> ExportStatus? {
        let path = "/exports/csv" + (query.isEmpty ? "" : "?" + query)
        guard let reply = await self.send(.POST, path, headers: noCache ? [("Cache-Control", "no-cache")] : [], operation: .create) else { return nil }
        switch reply.code {
        case 202:
            guard let status = self.decodeStatus(reply, what: "POST \(path)") else { return nil }
            self.recorder.count(.exportsCreated)
            let location = reply.headers.first(name: "Location")
            if location != "/exports/\(status.exportId)/status" {
                self.recorder.error(.headerMismatch, "POST \(path): Location \(location ?? "missing") for export \(status.exportId)")
            }
            return status
        case 429:
            self.recorder.count(.refused)
            return nil
        case 500...:
            return nil
        default:
            self.recorder.error(.unexpectedStatus, "POST \(path): \(reply.code) \(reply.text.prefix(200))")
            return nil
        }
    }

    enum StatusAnswer: Sendable {
        case status(ExportStatus)
        /// 404: unknown (deleted) export.
        case notFound
        /// Anything else, already recorded, or the run's limit.
        case failed
    }

    func status(_ id: String) async -> StatusAnswer {
        guard let reply = await self.send(.GET, "/exports/\(id)/status", operation: .status) else { return .failed }
        switch reply.code {
        case 200:
            return self.decodeStatus(reply, what: "status", expectedId: id).map { .status($0) } ?? .failed
        case 404:
            return .notFound
        case 500...:
            return .failed
        default:
            self.recorder.error(.unexpectedStatus, "GET /exports/\(id)/status: \(reply.code) \(reply.text.prefix(200))")
            return .failed
        }
    }

    /// Polls the status until the export ends (completed, failed, cancelled).
    /// A failed export is recorded; nil when the status could not be had.
    func awaitEnd(_ id: String) async -> ExportStatus? {
        var interval = Duration.milliseconds(50)
        while !Task.isCancelled {
            switch await self.status(id) {
            case .status(let status) where status.isTerminal:
                if status.status == "failed" { self.recorder.error(.exportFailed, "export \(id) failed: \(status.error ?? "no message")") }
                return status
            case .status:
                try? await Task.sleep(for: interval)
                interval = min(interval * 2, .milliseconds(500))
            case .notFound:
                self.recorder.error(.unexpectedStatus, "GET /exports/\(id)/status: 404 for an export not deleted")
                return nil
            case .failed:
                return nil
            }
        }
        return nil
    }

    /// `DELETE /exports/{id}`: its status code, or nil.
    func delete(_ id: String) async -> Int? {
        guard let reply = await self.send(.DELETE, "/exports/\(id)", operation: .delete) else { return nil }
        if reply.code < 500, ![200, 204].contains(reply.code) {
            self.recorder.error(.unexpectedStatus, "DELETE /exports/\(id): \(reply.code) \(reply.text.prefix(200))")
        }
        return reply.code
    }

    /// Where to download an export: the signed link when a token is in use
    /// (it needs no header), else the plain path.
    func downloadTarget(_ status: ExportStatus) -> (path: String, authorize: Bool) {
        if self.settings.token != nil, let link = status.downloadUrl, link.contains("signature=") { return (link, false) }
        return (status.links?.download ?? "/exports/\(status.exportId)/download", true)
    }
}
