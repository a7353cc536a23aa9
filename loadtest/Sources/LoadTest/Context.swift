/// What every session shares: the client, the checks, the finished files
/// kept for ranges, the digests learned so far, the parameter generator.
struct Context: Sendable {
    let client: GatewayClient
    let check: DownloadCheck
    let files: FinishedFiles
    let known: KnownDigests
    let parameters: ExportParameters

    var settings: Settings { self.client.settings }
    var recorder: Recorder { self.client.recorder }

    /// A completed export's bytes, learned for its query; a second completed
    /// export of the same query with other bytes is an error.
    @discardableResult
    func learn(_ status: ExportStatus, query: String) -> Digest? {
        guard let digest = status.digest else { return nil }
        if let other = self.known.learn(query, digest) {
            self.recorder.error(.coalesceMismatch, "two completed exports of ?\(query) differ: \(other) and \(digest) (export \(status.exportId))")
        }
        return digest
    }

    /// The bytes `query` gives, for a download whose own export was cancelled:
    /// learned earlier, else from an export made for the purpose.
    func reference(_ query: String) async -> Digest? {
        if let digest = self.known.digest(for: query) { return digest }
        self.recorder.count(.referenceExports)
        guard let created = await self.client.create(query), let final = await self.client.awaitEnd(created.exportId) else { return nil }
        let digest = self.learn(final, query: query)
        _ = await self.client.delete(created.exportId)
        return digest
    }

    /// Judges a whole download (a 200, or a resumed download's 206) of export
    /// `id` once the export has ended: the bytes when it completed, a cut
    /// when it did not. Returns the export's final status.
    @discardableResult
    func judge(_ result: DownloadResult, _ body: BodySummary, id: String, query: String, what: String, stitched: Bool = false) async -> ExportStatus? {
        guard result.code == 200 || result.code == 206 else {
            if result.code < 500 {
                self.recorder.error(.unexpectedStatus, "\(what) of \(id): \(result.code) \(String(decoding: result.collected ?? [], as: UTF8.self).prefix(200))")
            }
            return nil
        }
        guard let final = await self.client.awaitEnd(id) else { return nil }
        switch (result.end, final.status) {
        case (.complete, "completed"):
            if let digest = self.learn(final, query: query) {
                self.check.whole(body, expected: digest, what: "\(what) of \(id)", stitched: stitched)
                self.check.finishedHeaders(result, status: final, what: "\(what) of \(id)")
            }
        case (.complete, _):
            self.recorder.error(.truncated, "\(what) of \(id): ended cleanly after \(body.received) bytes (it looks complete) but the export is \(final.status)")
        case (.cut(let why), "completed"):
            self.recorder.error(.truncated, "\(what) of \(id): cut after \(result.bodyBytes) body bytes though the export completed (\(final.digest.map { "\($0)" } ?? "")): \(why)")
        case (.stalled, _):
            self.recorder.error(.timeout, "\(what) of \(id): no byte for \(Format.fixed(self.settings.readTimeout, 0)) s after \(result.bodyBytes) body bytes (export \(final.status))")
        case (.cut, "cancelled"):
            self.recorder.count(.expectedAborts)
        case (.cut, _), (.stopped, _):
            // Failed: counted by awaitEnd, and an aborted transfer is what it must cause.
            break
        }
        return final
    }
}
