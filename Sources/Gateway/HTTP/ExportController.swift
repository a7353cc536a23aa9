import Foundation
import HTTPTypes
import Hummingbird

/// The export API of MISSION.md: start (`POST`, or `GET` that also streams),
/// status, download, cancel or delete.
///
/// Every route acts for the caller `AccessMiddleware` put in the context:
/// an export another caller made is not found (404), as one that does not exist.
struct ExportController: Sendable {
    let manager: ExportManager
    let downloads: DownloadResponder
    let links: LinkSigner

    /// The header that names the export in responses that start or serve one.
    static let exportIDHeader = HTTPField.Name("X-Export-Id")!

    func addRoutes(to router: Router<GatewayRequestContext>) {
        router.post("/exports/csv") { request, context in try await self.create(request, caller: Self.caller(context, api: true)) }
        router.get("/exports/csv") { request, context in try await self.createAndStream(request, caller: Self.caller(context, api: true)) }
        router.get("/exports/:id/status") { _, context in
            try await self.status(context.parameters.get("id"), caller: Self.caller(context, api: true))
        }
        router.head("/exports/:id/status") { _, context in
            Self.headersOnly(try await self.status(context.parameters.get("id"), caller: Self.caller(context, api: true)))
        }
        router.get("/exports") { request, context in try await self.list(request, caller: Self.caller(context, api: true)) }
        router.head("/exports") { request, context in Self.headersOnly(try await self.list(request, caller: Self.caller(context, api: true))) }
        for form in DownloadResponder.Form.allCases {
            router.get("/exports/:id/\(form.pathSegment)") { request, context in
                try await self.download(request, id: context.parameters.get("id"), form: form, caller: Self.caller(context, api: false))
            }
            router.head("/exports/:id/\(form.pathSegment)") { request, context in
                Self.headersOnly(try await self.download(request, id: context.parameters.get("id"), form: form, caller: Self.caller(context, api: false)))
            }
        }
        router.delete("/exports/:id") { _, context in try await self.delete(context.parameters.get("id"), caller: Self.caller(context, api: true)) }
    }

    /// Who the request acts for. None means it slipped past
    /// `AccessMiddleware` (a path it did not expect): refused. A signed link
    /// opens only downloads (`api` false).
    private static func caller(_ context: GatewayRequestContext, api: Bool) throws -> Caller {
        switch context.caller {
        case nil: throw APIError.unauthorized(tokenGiven: false)
        case .link where api: throw APIError.badLink()
        case let caller?: return caller
        }
    }

    /// The status JSON, with a fresh signed download link, naming the export
    /// in `X-Export-Id` (and, for a new one, its status URL in `Location`).
    func statusResponse(_ job: ExportJob, status: HTTPResponse.Status, location: Bool = false) throws -> Response {
        var json = job.snapshot()
        json.downloadUrl = self.links.downloadLink(for: job.id)
        var headers: HTTPFields = [Self.exportIDHeader: job.id.uuidString.lowercased()]
        if location { headers[.location] = json.links.status }
        return try JSONBody.response(status: status, json, headers: headers)
    }

    /// `POST /exports/csv`: 202 with the status JSON and a `Location`.
    func create(_ request: Request, caller: Caller) async throws -> Response {
        let job = try await self.submit(request, caller: caller)
        return try self.statusResponse(job, status: .accepted, location: true)
    }

    /// `GET /exports/csv`: starts the export and streams it in this response.
    func createAndStream(_ request: Request, caller: Caller) async throws -> Response {
        let job = try await self.submit(request, caller: caller)
        let id = job.id.uuidString.lowercased()
        return try await self.downloads.response(
            for: job, request: request,
            extraHeaders: [
                Self.exportIDHeader: id,
                .contentLocation: "/exports/\(id)/download",
            ])
    }

    func status(_ id: String?, caller: Caller) async throws -> Response {
        let job = try await self.job(id, caller: caller)
        return try self.statusResponse(job, status: .ok)
    }

    func download(_ request: Request, id: String?, form: DownloadResponder.Form, caller: Caller) async throws -> Response {
        let job = try await self.job(id, caller: caller)
        return try await self.downloads.response(
            for: job, request: request, form: form,
            extraHeaders: [
                Self.exportIDHeader: job.id.uuidString.lowercased()
            ])
    }

    /// `GET /exports?limit=&cursor=`: the caller's exports, newest first, as
    /// `{"exports": [status…], "nextCursor": …}`, with a `Link: rel="next"`
    /// header while there is a next page.
    func list(_ request: Request, caller: Caller) async throws -> Response {
        let (limit, cursor): (Int, ExportCursor?)
        do {
            (limit, cursor) = try Self.listParameters(request.uri.query)
        } catch {
            throw APIError.invalidParameter(error)
        }
        switch await self.manager.list(for: caller, after: cursor, limit: limit) {
        case .unknownYet: throw APIError.journalNotLoaded()
        case .unavailable: throw APIError.journalUnavailable()
        case .page(let page):
            let entries = page.jobs.map { job in
                var json = job.snapshot()
                json.downloadUrl = self.links.downloadLink(for: job.id)
                return json
            }
            var headers: HTTPFields = [.cacheControl: "no-store"]
            let next = page.next?.text
            if let next { headers[HTTPField.Name("Link")!] = "</exports?limit=\(limit)&cursor=\(next)>; rel=\"next\"" }
            return try JSONBody.response(status: .ok, ExportList(exports: entries, nextCursor: next), headers: headers)
        }
    }

    /// `limit` (1 to 100, default 20) and `cursor`, each at most once; nothing else.
    static func listParameters(_ query: String?) throws(ParameterError) -> (limit: Int, cursor: ExportCursor?) {
        var limit = 20
        var cursor: ExportCursor?
        var seen: Set<String> = []
        for (name, value) in try QueryString.parse(query) {
            guard seen.insert(name).inserted else { throw ParameterError(parameter: name, message: "\(name) may be given once") }
            switch name {
            case "limit":
                // Plain decimal, as nextCursor's Link writes it: no sign, no leading zero.
                guard (1...3).contains(value.utf8.count), value.utf8.allSatisfy(ASCII.isDigit), value.utf8.first != UInt8(ascii: "0"),
                    let number = Int(value), (1...100).contains(number)
                else {
                    throw ParameterError(parameter: "limit", message: "limit must be a whole number from 1 to 100 (default 20)")
                }
                limit = number
            case "cursor":
                guard let parsed = ExportCursor(value) else {
                    throw ParameterError(parameter: "cursor", message: "cursor must be the nextCursor of an earlier page, as it was given")
                }
                cursor = parsed
            default:
                let shown = quoted(name.utf8)
                throw ParameterError(parameter: String(shown.dropFirst().dropLast()), message: "unknown parameter \(shown); allowed are limit, cursor", allowed: ["limit", "cursor"])
            }
        }
        return (limit, cursor)
    }

    /// The body of `GET /exports`. `nextCursor` is written as `null` on the last page.
    struct ExportList: Encodable {
        let exports: [ExportStatus]
        let nextCursor: String?

        private enum CodingKeys: String, CodingKey { case exports, nextCursor }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(self.exports, forKey: .exports)
            try c.encode(self.nextCursor, forKey: .nextCursor)
        }
    }

    /// Cancels a queued or running export (200 with its status), or deletes an
    /// ended or cancelled one (204): so a second DELETE of a cancelled export
    /// deletes it, and after that it is gone (404).
    func delete(_ id: String?, caller: Caller) async throws -> Response {
        let exportID = try Self.exportID(id)
        if case .expired(let evicted) = await self.manager.lookup(exportID, for: caller) { throw evicted ? APIError.exportEvicted() : APIError.exportExpired() }
        let outcome: ExportManager.DeleteOutcome
        do {
            outcome = try await self.manager.delete(exportID, for: caller)
        } catch {
            throw APIError.journalUnavailable()
        }
        switch outcome {
        case .cancelled(let job):
            return try self.statusResponse(job, status: .ok)
        case .deleted: return Response(status: .noContent)
        case .notFound: throw APIError.notFound()
        case .unknownYet: throw APIError.journalNotLoaded()
        }
    }

    /// The response to HEAD: the headers GET would send, no body. The HTTP
    /// encoder frames it as the GET would be (length or chunked) and sends no body.
    static func headersOnly(_ response: Response) -> Response {
        var head = Response(status: response.status, headers: response.headers)
        if response.headers[.contentLength] == nil { head.headers[.contentLength] = nil }
        return head
    }

    private func submit(_ request: Request, caller: Caller) async throws -> ExportJob {
        let exportRequest: ExportRequest
        do {
            exportRequest = try ExportRequest.parse(try QueryString.parse(request.uri.query))
        } catch {
            throw APIError.invalidParameter(error)
        }
        // `Cache-Control: no-cache` asks for a new run rather than a shared or cached one.
        let directives = [request.headers[.cacheControl], request.headers[HTTPField.Name("Pragma")!]].compactMap { $0?.lowercased() }
        let fresh = directives.contains { $0.split(separator: ",").contains { $0.trimmingSpaces() == "no-cache" } }
        do {
            return try await self.manager.submit(exportRequest, owner: caller.owner, fresh: fresh)
        } catch {
            switch error {
            case .cacheFull(let message): throw APIError.cacheFull(message)
            case .queueFull: throw APIError.queueFull(retryAfterSeconds: 5)
            case .tokenQueueFull(let limit): throw APIError.tokenQueueFull(limit: limit, retryAfterSeconds: 5)
            case .tokenRateLimited(let limit, let seconds): throw APIError.tokenRateLimited(limit: limit, retryAfterSeconds: seconds)
            case .tooManyExports: throw APIError.tooManyExports(retryAfterSeconds: 60)
            case .shuttingDown: throw APIError.shuttingDown()
            case .journalUnavailable: throw APIError.journalUnavailable()
            }
        }
    }

    private func job(_ id: String?, caller: Caller) async throws -> ExportJob {
        switch await self.manager.lookup(try Self.exportID(id), for: caller) {
        case .found(let job): return job
        case .expired(let evicted): throw evicted ? APIError.exportEvicted() : APIError.exportExpired()
        case .notFound: throw APIError.notFound()
        case .unknownYet: throw APIError.journalNotLoaded()
        }
    }

    /// Export ids are UUIDs; anything else in the path is simply not found.
    private static func exportID(_ text: String?) throws -> UUID {
        guard let text, text.utf8.count == 36, let id = UUID(uuidString: text) else { throw APIError.notFound() }
        return id
    }
}
