/// Ids `from ..< below`; a nil end is open. The first and last ranges of a
/// plan are open, so together the ranges cover every id whatever the
/// statistics said, and each id is in exactly one of them.
struct IDRange: Equatable, Sendable, CustomStringConvertible {
    var from: Int64?
    var below: Int64?

    /// The condition on `id`, nil for every id. Integers of our own making.
    var condition: String? {
        switch (self.from, self.below) {
        case (nil, nil): nil
        case (let from?, nil): "id >= \(from)"
        case (nil, let below?): "id < \(below)"
        case (let from?, let below?): "id >= \(from) AND id < \(below)"
        }
    }

    var description: String { "[\(self.from.map(String.init) ?? "")..<\(self.below.map(String.init) ?? "")]" }
}

/// How one export is cut into COPYs of id ranges, read under one snapshot
/// and concatenated in id order: byte for byte the one COPY of the whole
/// (ORDER BY id; the header only in the first).
///
/// **The head.** When PostgreSQL's plan for the whole sorts its rows (a
/// filter, a bitmap scan), nothing comes until the sort is done: 594 ms for
/// `country_code=US` on 10M rows. A COPY of the first 1/1024 of the ids is
/// an index scan that sends at once (1.5 ms), so a live download starts in
/// milliseconds; the rest follows (`FAST_START`).
///
/// **The pieces.** The rest is cut into `n` ranges of about as many rows,
/// from the planner's histogram of `id` (`pg_stats.histogram_bounds`,
/// equal-frequency bounds) or, without one, evenly between the smallest and
/// the largest id. The first piece is read by the export's own connection
/// into its file; the others by connections of their own that share its
/// snapshot, each into a spool file, copied into the export's file in order.
/// A range of ids is an index scan on the primary key that streams (no
/// sort), filtered or not.
enum ExportPlan {
    /// The first 1/1024 of the ids, and the rest; nil when there are too
    /// few ids (or none) for a head to be worth it.
    static func head(minID: Int64?, maxID: Int64?) -> (head: IDRange, rest: IDRange)? {
        guard let minID, let maxID, minID < maxID else { return nil }
        let (span, overflow) = maxID.subtractingReportingOverflow(minID)
        guard !overflow else { return nil }
        let headEnd = minID + max(0, span / 1024)
        guard headEnd < maxID else { return nil }
        return (IDRange(from: nil, below: headEnd + 1), IDRange(from: headEnd + 1, below: nil))
    }

    /// `range` (whose ids lie within `minID...maxID`) cut into at most `n`
    /// consecutive ranges, the cuts at the histogram's bounds where it has
    /// enough of them inside the range, else evenly spaced. The first keeps
    /// `range.from` and the last `range.below`, so nothing is lost.
    static func split(_ range: IDRange, minID: Int64?, maxID: Int64?, into n: Int, histogram: [Int64]) -> [IDRange] {
        guard n > 1, let minID, let maxID else { return [range] }
        let low = max(range.from ?? minID, minID)
        let high = min(range.below.map { $0 - 1 } ?? maxID, maxID)
        guard low < high else { return [range] }
        var cuts: [Int64] = []
        let inside = histogram.filter { $0 > low && $0 <= high }.sorted()
        if inside.count >= n * 4 {
            // Equal-frequency bounds: every step between two holds as many rows.
            for k in 1..<n { cuts.append(inside[inside.count * k / n]) }
        } else {
            let (span, overflow) = high.subtractingReportingOverflow(low)
            guard !overflow else { return [range] }
            for k in 1..<n { cuts.append(low + Int64(Double(span) * Double(k) / Double(n)) + 1) }
        }
        // Strictly increasing and inside (low, high]: a duplicate cut would make an empty range.
        var unique: [Int64] = []
        for cut in cuts where cut > low && cut <= high && cut > (unique.last ?? low) { unique.append(cut) }
        var ranges: [IDRange] = []
        var from = range.from
        for cut in unique {
            ranges.append(IDRange(from: from, below: cut))
            from = cut
        }
        ranges.append(IDRange(from: from, below: range.below))
        return ranges
    }

    /// Parses `pg_stats.histogram_bounds` as text (`{1,105364,…}`); an
    /// empty list when it is not a list of integers.
    static func histogram(fromText text: String?) -> [Int64] {
        guard let text, text.first == "{", text.last == "}" else { return [] }
        let values = text.dropFirst().dropLast().split(separator: ",").map { Int64($0) }
        guard values.allSatisfy({ $0 != nil }) else { return [] }
        return values.compactMap { $0 }
    }

    /// How many pieces: `parallelism` shared among the exports running now
    /// (two running exports on a parallelism of 4 get 2 each; the cores are
    /// the limit, not the connections), and one for an export too small to
    /// gain from more (fewer than `minRowsPerPiece` rows a piece, by the
    /// planner's estimate).
    static func pieceCount(parallelism: Int, runningExports: Int, estimatedRows: Int?, minRowsPerPiece: Int = Self.minRowsPerPiece) -> Int {
        let share = max(1, parallelism / max(1, runningExports))
        guard let estimatedRows else { return 1 }
        return max(1, min(share, estimatedRows / max(1, minRowsPerPiece)))
    }

    /// Below this many rows a piece costs more (a connection, a spool) than it saves.
    static let minRowsPerPiece = 50_000
}
