/// What one `mixed` session does after choosing its export's parameters.
enum MixedFlow: String, CaseIterable, Sendable {
    /// Create, then download at once, following the export as it is written (30 % gzip).
    case live
    /// Create, poll until completed, download the finished file (40 % gzip).
    case finished
    /// Download, stop after a random number of bytes, resume with `Range: bytes=N-`
    /// (and `If-Range`), check the stitched whole (live or finished; finished ones 30 % gzip).
    case resume
    /// Poll until completed, then 1–4 random ranges checked against the file's bytes at those offsets.
    case ranges
    /// Create, maybe follow it live, DELETE after up to 300 ms.
    case cancel
    /// `GET /exports/csv?…`: start and stream in one response (30 % gzip).
    case stream

    private static let weights: [(MixedFlow, Int)] = [(.live, 20), (.finished, 20), (.resume, 15), (.ranges, 15), (.cancel, 15), (.stream, 15)]

    static func pick(using rng: inout SplitMix64) -> MixedFlow {
        var roll = Int.random(in: 0..<Self.weights.reduce(0) { $0 + $1.1 }, using: &rng)
        for (flow, weight) in Self.weights {
            if roll < weight { return flow }
            roll -= weight
        }
        return .live
    }
}
