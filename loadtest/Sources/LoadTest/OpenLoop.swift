/// Arrivals on a clock of their own: the i-th starts at `start + i / rate`
/// whether or not earlier ones have finished (an open loop, so a slow
/// gateway meets the same offered load instead of a politely waiting one).
/// At most `maxInFlight` run at once; an arrival beyond is dropped and
/// counted, which says the load generator, not the gateway, set the pace.
struct OpenLoop: Sendable {
    let rate: Double
    /// Arrivals stop after this long…
    let duration: Duration?
    /// …or after this many.
    let count: Int?
    let maxInFlight: Int
    let recorder: Recorder

    func run(_ body: @escaping @Sendable (Int) async -> Void) async {
        let clock = ContinuousClock()
        let start = clock.now
        await withDiscardingTaskGroup { group in
            var index = 0
            while !Task.isCancelled {
                if let count, index >= count { break }
                let offset = Duration.seconds(Double(index) / self.rate)
                if let duration, offset >= duration { break }
                guard (try? await clock.sleep(until: start + offset)) != nil else { break }
                let arrival = index
                index += 1
                guard self.recorder.enter(limit: self.maxInFlight) else {
                    self.recorder.count(.droppedArrivals)
                    continue
                }
                group.addTask {
                    await body(arrival)
                    self.recorder.leave()
                }
            }
        }
    }
}
