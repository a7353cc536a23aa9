/// `coalesce`: bursts (at `--rate`, for `--duration` or `--rounds`) of
/// `--count` identical requests sent at once, for a request no earlier burst
/// made. A quarter stream it with `GET /exports/csv`, the rest `POST` and
/// then download it live or once finished. Every request gets an id of its
/// own (the API promises that); they must all end with the same bytes, each
/// download checked against its own status. Distinct runs (by `startedAt`)
/// are counted: one a burst when every request joined the first.
struct CoalesceScenario: Sendable {
    let context: Context

    /// What one member of a burst ended with.
    private struct Member: Sendable {
        let id: String
        let digest: Digest
        let startedAt: String?
    }

    func run() async {
        let settings = self.context.settings
        let recorder = self.context.recorder
        let context = self.context
        let loop = OpenLoop(rate: settings.rate, duration: .seconds(settings.duration), count: settings.rounds, maxInFlight: settings.maxInFlight, recorder: recorder)
        await loop.run { round in
            recorder.count(.coalesceBursts)
            var rng = SplitMix64(seed: settings.seed, stream: UInt64(round) + 1)
            let query = context.parameters.unique(using: &rng)
            let size = settings.count ?? 20
            var members: [Member] = []
            await withTaskGroup(of: Member?.self) { group in
                for i in 0..<size {
                    group.addTask { await Self.member(i, query: query, context: context) }
                }
                for await member in group {
                    if let member { members.append(member) }
                }
            }
            if Task.isCancelled {
                recorder.cutShort("burst \(round) was still running at the time limit")
                return
            }
            let digests = Set(members.map { "\($0.digest.size) \($0.digest.sha256)" })
            if digests.count > 1 {
                recorder.error(
                    .coalesceMismatch, "burst \(round) (?\(query)): \(members.count) identical requests ended with \(digests.count) different files: \(digests.sorted().joined(separator: "; "))")
            }
            let ids = Set(members.map(\.id))
            if ids.count != members.count { recorder.error(.coalesceMismatch, "burst \(round): \(members.count) requests got only \(ids.count) export ids") }
            recorder.count(.coalesceRuns, by: Set(members.compactMap(\.startedAt)).count)
        }
    }

    private static func member(_ i: Int, query: String, context: Context) async -> Member? {
        let client = context.client
        let state = BodyState()
        let result: DownloadResult
        let id: String
        if i % 4 == 3 {
            guard let streamed = await client.download(DownloadSpec(path: "/exports/csv?\(query)"), into: state) else { return nil }
            if streamed.code == 429 {
                context.recorder.count(.refused)
                return nil
            }
            guard let header = streamed.headers.first(name: "X-Export-Id") else {
                if streamed.code < 500 { context.recorder.error(.unexpectedStatus, "GET /exports/csv?\(query): \(streamed.code) without X-Export-Id") }
                return nil
            }
            context.recorder.count(.exportsCreated)
            context.recorder.count(.streams)
            (result, id) = (streamed, header)
        } else {
            guard var status = await client.create(query) else { return nil }
            if i % 2 == 1 {
                guard let final = await client.awaitEnd(status.exportId), final.status == "completed" else { return nil }
                status = final
            }
            let target = client.downloadTarget(status)
            guard let downloaded = await client.download(DownloadSpec(path: target.path, authorize: target.authorize), into: state) else { return nil }
            (result, id) = (downloaded, status.exportId)
        }
        guard let final = await context.judge(result, state.summary, id: id, query: query, what: "burst member \(i)"), let digest = final.digest else { return nil }
        return Member(id: id, digest: digest, startedAt: final.startedAt)
    }
}
