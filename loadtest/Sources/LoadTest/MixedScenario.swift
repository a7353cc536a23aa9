/// `mixed` and `soak`: sessions arriving at `--rate` for `--duration` (or
/// `--count` of them), each a `MixedSession` with its own seeded choices.
struct MixedScenario: Sendable {
    let context: Context

    func run() async {
        let settings = self.context.settings
        let recorder = self.context.recorder
        let context = self.context
        let loop = OpenLoop(rate: settings.rate, duration: .seconds(settings.duration), count: settings.count, maxInFlight: settings.maxInFlight, recorder: recorder)
        await loop.run { index in
            recorder.count(.sessions)
            var session = MixedSession(context: context, index: index, rng: SplitMix64(seed: settings.seed, stream: UInt64(index) + 1))
            let flow = await session.run()
            if Task.isCancelled { recorder.cutShort("session \(index) (\(flow.rawValue)) was still running at the time limit") }
        }
    }
}
