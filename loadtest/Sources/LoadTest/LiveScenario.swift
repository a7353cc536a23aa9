/// `live`: one export (made with `--query`, a new run unless `--no-fresh`),
/// `--readers` downloads of it arriving at `--rate` while it is written,
/// the first `--slow` of them paced at `--slow-rate`. Each must end with
/// exactly the finished file. The status is polled once a second meanwhile.
struct LiveScenario: Sendable {
    let context: Context

    func run() async {
        let settings = self.context.settings
        let client = self.context.client
        let recorder = self.context.recorder
        let context = self.context
        guard let created = await client.create(settings.query, noCache: settings.fresh) else {
            recorder.error(.unexpectedStatus, "live: the export could not be created; nothing to read")
            return
        }
        Console.line("live: export \(created.exportId) (\(created.status)), \(settings.readers) readers, \(settings.slow) at \(Format.bytes(Double(settings.slowRate)))/s")
        let id = created.exportId
        let query = settings.query
        let target = client.downloadTarget(created)
        await withDiscardingTaskGroup { group in
            // The status a monitoring client would poll, for its latency.
            group.addTask {
                while !Task.isCancelled {
                    guard case .status(let status) = await client.status(id), !status.isTerminal else { return }
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            let loop = OpenLoop(rate: settings.rate, duration: nil, count: settings.readers, maxInFlight: max(settings.maxInFlight, settings.readers), recorder: recorder)
            await loop.run { reader in
                recorder.count(.sessions)
                let state = BodyState()
                let spec = DownloadSpec(path: target.path, authorize: target.authorize, bytesPerSecond: reader < settings.slow ? settings.slowRate : nil)
                if let result = await client.download(spec, into: state) {
                    await context.judge(result, state.summary, id: id, query: query, what: "reader \(reader)\(reader < settings.slow ? " (slow)" : "")")
                }
                if Task.isCancelled { recorder.cutShort("reader \(reader) was still reading at the time limit") }
            }
        }
    }
}
