/// One arrival of the `mixed` (and `soak`) scenario: an export with random
/// parameters, used along one `MixedFlow`, every byte checked.
struct MixedSession {
    let context: Context
    let index: Int
    var rng: SplitMix64

    private var client: GatewayClient { self.context.client }
    private var recorder: Recorder { self.context.recorder }

    /// Biggest range asked for; ranges are read into memory to compare.
    static let maxRangeBytes = 1 << 20

    mutating func run() async -> MixedFlow {
        let query = self.context.parameters.random(using: &self.rng)
        let flow = MixedFlow.pick(using: &self.rng)
        switch flow {
        case .live: await self.live(query)
        case .finished: await self.finished(query)
        case .resume: await self.resume(query)
        case .ranges: await self.ranges(query)
        case .cancel: await self.cancel(query)
        case .stream: await self.stream(query)
        }
        return flow
    }

    private mutating func live(_ query: String) async {
        guard let created = await self.client.create(query) else { return }
        let gzip = self.rng.chance(0.3)
        let final = await self.whole(created, query: query, gzip: gzip, what: gzip ? "live gzip download" : "live download")
        await self.maybeDelete(final)
    }

    private mutating func finished(_ query: String) async {
        guard let created = await self.client.create(query), let final = await self.client.awaitEnd(created.exportId), final.status == "completed" else { return }
        let gzip = self.rng.chance(0.4)
        let after = await self.whole(final, query: query, gzip: gzip, what: gzip ? "gzip download" : "download")
        await self.maybeDelete(after)
    }

    /// A whole download of `status`'s export, judged when the export has ended.
    @discardableResult
    private func whole(_ status: ExportStatus, query: String, gzip: Bool, what: String) async -> ExportStatus? {
        let target = self.client.downloadTarget(status)
        let state = BodyState()
        guard let result = await self.client.download(DownloadSpec(path: target.path, authorize: target.authorize, gzip: gzip), into: state) else { return nil }
        return await self.context.judge(result, state.summary, id: status.exportId, query: query, what: what)
    }

    private mutating func resume(_ query: String) async {
        guard var status = await self.client.create(query) else { return }
        let live = self.rng.chance(0.5)
        let gzip = !live && self.rng.chance(0.3)
        if !live {
            guard let final = await self.client.awaitEnd(status.exportId), final.status == "completed" else { return }
            status = final
        }
        // Finished identity files stop inside the file; otherwise within the
        // first 256 KiB (a smaller body simply completes, judged as whole).
        let size = live || gzip ? nil : status.sizeBytes
        if let size, size < 2 {
            await self.whole(status, query: query, gzip: false, what: "download")
            return
        }
        let stopAt = size.map { Int.random(in: 1..<$0, using: &self.rng) } ?? Int.random(in: 1...(256 << 10), using: &self.rng)
        let what = "\(live ? "live " : "")\(gzip ? "gzip " : "")download resumed at \(stopAt)"
        let id = status.exportId
        let target = self.client.downloadTarget(status)
        let state = BodyState()
        guard let first = await self.client.download(DownloadSpec(path: target.path, authorize: target.authorize, gzip: gzip, stopAfter: stopAt), into: state) else { return }
        guard first.end == .stopped else {
            await self.context.judge(first, state.summary, id: id, query: query, what: what)
            return
        }
        // A strong ETag names the exact bytes; a live response has none.
        let ifRange = first.etag.flatMap { $0.hasPrefix("\"") ? $0 : nil }
        let spec = DownloadSpec(path: target.path, authorize: target.authorize, range: "bytes=\(stopAt)-", ifRange: ifRange, gzip: gzip)
        guard let second = await self.client.download(spec, into: state) else { return }
        if second.code == 206 {
            let contentRange = second.headers.first(name: "Content-Range") ?? ""
            if !contentRange.hasPrefix("bytes \(stopAt)-") {
                self.recorder.error(.headerMismatch, "\(what) of \(id): Content-Range \"\(contentRange)\" for bytes=\(stopAt)-")
            }
        }
        await self.context.judge(second, state.summary, id: id, query: query, what: what, stitched: second.code == 206)
    }

    private mutating func ranges(_ query: String) async {
        guard let created = await self.client.create(query), let final = await self.client.awaitEnd(created.exportId),
            let digest = self.context.learn(final, query: query), digest.size > 0
        else { return }
        guard digest.size <= self.context.settings.fileCacheBytes else {
            self.recorder.count(.rangesSkipped)
            return
        }
        let id = final.exportId
        let target = self.client.downloadTarget(final)
        let context = self.context
        guard
            let file = await self.context.files.open(
                digest,
                fetch: { file in
                    let state = BodyState()
                    guard let result = await context.client.download(DownloadSpec(path: target.path, authorize: target.authorize, file: file), into: state) else { return false }
                    guard result.code == 200, result.end == .complete else {
                        await context.judge(result, state.summary, id: id, query: query, what: "download of the finished file")
                        return false
                    }
                    context.check.finishedHeaders(result, status: final, what: "download of the finished file \(id)")
                    return context.check.whole(state.summary, expected: digest, what: "download of the finished file \(id)")
                })
        else { return }
        defer { file.close() }
        for _ in 0..<Int.random(in: 1...4, using: &self.rng) {
            await self.range(of: final, digest: digest, file: file)
        }
        await self.maybeDelete(final)
    }

    /// One random range of a finished file, against the file's bytes.
    private mutating func range(of status: ExportStatus, digest: Digest, file: LocalFile) async {
        let size = digest.size
        let header: String
        var span: ClosedRange<Int>?
        switch Int.random(in: 0..<20, using: &self.rng) {
        case 0..<12:
            let start = Int.random(in: 0..<size, using: &self.rng)
            let end = start + Int.random(in: 0..<min(Self.maxRangeBytes, size - start), using: &self.rng)
            header = "bytes=\(start)-\(end)"
            span = start...end
        case 12:
            // An end past the file, which the gateway clamps.
            let start = size - Int.random(in: 1...min(Self.maxRangeBytes, size), using: &self.rng)
            header = "bytes=\(start)-\(size + 100)"
            span = start...(size - 1)
        case 13..<16:
            let start = size - Int.random(in: 1...min(Self.maxRangeBytes, size), using: &self.rng)
            header = "bytes=\(start)-"
            span = start...(size - 1)
        case 16..<19:
            let suffix = Int.random(in: 1...min(Self.maxRangeBytes, size + 10), using: &self.rng)
            header = "bytes=-\(suffix)"
            span = max(0, size - suffix)...(size - 1)
        default:
            header = "bytes=\(size)-"
        }
        let target = self.client.downloadTarget(status)
        let what = "range \(header) of \(status.exportId) (\(size) bytes)"
        let spec = DownloadSpec(path: target.path, authorize: target.authorize, range: header, collectUpTo: Self.maxRangeBytes + 1024, operation: .range)
        guard let result = await self.client.download(spec, into: BodyState()) else { return }
        guard let span else {
            let contentRange = result.headers.first(name: "Content-Range")
            if result.code != 416 {
                self.recorder.error(.unexpectedStatus, "\(what): \(result.code), past the end must be 416")
            } else if contentRange != "bytes */\(size)" {
                self.recorder.error(.headerMismatch, "\(what): 416 with Content-Range \(contentRange ?? "missing")")
            }
            return
        }
        guard result.code == 206 else {
            if result.code < 500 { self.recorder.error(.unexpectedStatus, "\(what): \(result.code), expected 206") }
            return
        }
        switch result.end {
        case .cut(let why):
            self.recorder.error(.truncated, "\(what): cut after \(result.bodyBytes) bytes: \(why)")
            return
        case .stalled:
            self.recorder.error(.timeout, "\(what): no byte for \(Format.fixed(self.context.settings.readTimeout, 0)) s")
            return
        case .complete, .stopped:
            break
        }
        let contentRange = result.headers.first(name: "Content-Range")
        if contentRange != "bytes \(span.lowerBound)-\(span.upperBound)/\(size)" {
            self.recorder.error(.headerMismatch, "\(what): Content-Range \(contentRange ?? "missing"), expected bytes \(span.lowerBound)-\(span.upperBound)/\(size)")
        }
        guard let body = result.collected, !result.collectOverflow else {
            self.recorder.error(.rangeMismatch, "\(what): \(result.bodyBytes) bytes for a range of \(span.count)")
            return
        }
        guard let expected = try? await file.read(at: span.lowerBound, count: span.count) else { return }
        if body.count != expected.count {
            self.recorder.error(.rangeMismatch, "\(what): \(body.count) bytes for a range of \(span.count)")
        } else if let at = zip(body, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset {
            self.recorder.error(.rangeMismatch, "\(what): byte \(span.lowerBound + at) is \(body[at]), the file has \(expected[at])")
        } else {
            self.recorder.count(.rangesVerified)
        }
    }

    private mutating func cancel(_ query: String) async {
        guard let created = await self.client.create(query) else { return }
        let id = created.exportId
        let follow = self.rng.chance(0.6)
        let delay = Duration.milliseconds(Int.random(in: 0...300, using: &self.rng))
        let client = self.client
        let target = client.downloadTarget(created)
        await withTaskGroup(of: (DownloadResult, BodySummary)?.self) { group in
            if follow {
                group.addTask {
                    let state = BodyState()
                    guard let result = await client.download(DownloadSpec(path: target.path, authorize: target.authorize), into: state) else { return nil }
                    return (result, state.summary)
                }
            }
            try? await Task.sleep(for: delay)
            let code = await client.delete(id)
            if code == 200 {
                self.recorder.count(.cancels)
                if case .status(let status) = await client.status(id), status.status != "cancelled" {
                    self.recorder.error(.unexpectedStatus, "export \(id): status \(status.status) after its cancel was acknowledged")
                }
            } else if code == 204 {
                self.recorder.count(.deletes)
            }
            guard let outcome = await group.next(), let (result, body) = outcome else { return }
            await self.judgeCancelled(result, body, id: id, query: query, deleteCode: code)
        }
    }

    /// A live download of an export that was cancelled (200) or deleted after
    /// it ended (204) while it ran.
    private func judgeCancelled(_ result: DownloadResult, _ body: BodySummary, id: String, query: String, deleteCode: Int?) async {
        let what = "live download of cancelled export"
        switch (result.code, result.end) {
        case (404, _), (410, _):
            if deleteCode == 200 || deleteCode == 204 {
                self.recorder.count(.goneBeforeDownload)
            } else {
                self.recorder.error(.unexpectedStatus, "\(what) \(id): \(result.code) though it was not deleted")
            }
        case (200, .cut(let why)):
            if deleteCode == 200 {
                self.recorder.count(.expectedAborts)
            } else if deleteCode == 204 {
                self.recorder.error(.truncated, "\(what) \(id): cut after \(result.bodyBytes) bytes though the export had completed before its delete: \(why)")
            } else {
                await self.context.judge(result, body, id: id, query: query, what: what)
            }
        case (200, .stalled):
            self.recorder.error(.timeout, "\(what) \(id): no byte for \(Format.fixed(self.context.settings.readTimeout, 0)) s after \(result.bodyBytes) bytes")
        case (200, .complete):
            // It looks complete, so it must be the whole file: check it
            // against what this request gives when it completes.
            guard let expected = await self.context.reference(query) else { return }
            if self.context.check.whole(body, expected: expected, what: "\(what) \(id) (ended cleanly)"), deleteCode == 200 {
                self.recorder.count(.completedDespiteCancel)
            }
        default:
            if result.code < 500 { self.recorder.error(.unexpectedStatus, "\(what) \(id): \(result.code)") }
        }
    }

    private mutating func stream(_ query: String) async {
        let gzip = self.rng.chance(0.3)
        let state = BodyState()
        let path = "/exports/csv" + (query.isEmpty ? "" : "?" + query)
        guard let result = await self.client.download(DownloadSpec(path: path, gzip: gzip), into: state) else { return }
        if result.code == 429 {
            self.recorder.count(.refused)
            return
        }
        guard result.code == 200, let id = result.headers.first(name: "X-Export-Id") else {
            if result.code < 500 { self.recorder.error(.unexpectedStatus, "GET \(path): \(result.code) \(result.headers.first(name: "X-Export-Id") == nil ? "without X-Export-Id" : "")") }
            return
        }
        self.recorder.count(.exportsCreated)
        if let final = await self.context.judge(result, state.summary, id: id, query: query, what: "streamed GET /exports/csv"), final.status == "completed" {
            self.recorder.count(.streams)
        }
    }

    /// One session in ten deletes its finished export: 204, then 404.
    private mutating func maybeDelete(_ status: ExportStatus?) async {
        guard let status, status.status == "completed", self.rng.chance(0.1) else { return }
        guard let code = await self.client.delete(status.exportId) else { return }
        if code == 204 {
            self.recorder.count(.deletes)
            if case .status = await self.client.status(status.exportId) {
                self.recorder.error(.unexpectedStatus, "export \(status.exportId) still answers its status after its delete")
            }
        } else if code < 500 {
            self.recorder.error(.unexpectedStatus, "DELETE of completed export \(status.exportId): \(code), expected 204")
        }
    }
}
