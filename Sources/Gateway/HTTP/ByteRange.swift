/// The `Range` request header (RFC 9110 §14.1.2, §14.2), parsed apart from
/// any file so it can be judged against a finished file's size or against a
/// file that is still growing.
enum RangeSpec: Equatable {
    /// `a-b`
    case closed(Int, Int)
    /// `a-`
    case from(Int)
    /// `-n`: the last n bytes.
    case suffix(Int)
}

enum ByteRange {
    /// More ranges than this in one request and the Range header is ignored
    /// (the whole file is sent), as RFC 9110 §14.2 allows: it bounds the work
    /// a single request can ask for.
    static let maxRanges = 16

    /// What a request asks for when judged against a file of known size.
    enum Resolution: Equatable {
        /// No usable Range: send the whole file.
        case none
        /// Send these byte ranges (inclusive, sorted, non-overlapping).
        case ranges([ClosedRange<Int>])
        /// Well-formed, but no range overlaps the file: 416.
        case unsatisfiable
    }

    /// The range specs of a `bytes=` header; nil when absent, malformed, of
    /// another unit, or asking for more than `maxRanges` ranges (then ignored).
    static func specs(_ header: String?) -> [RangeSpec]? {
        guard let header else { return nil }
        let trimmed = header.trimmingSpaces()
        guard trimmed.lowercased().hasPrefix("bytes=") else { return nil }
        let items = trimmed.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false)
        guard !items.isEmpty, items.count <= Self.maxRanges else { return nil }
        var specs: [RangeSpec] = []
        for item in items {
            let spec = item.trimmingSpaces()
            guard let dash = spec.firstIndex(of: "-") else { return nil }
            let first = String(spec[..<dash])
            let last = String(spec[spec.index(after: dash)...])
            switch (Self.number(first), Self.number(last)) {
            case (nil, let n?) where first.isEmpty: specs.append(.suffix(n))
            case (let a?, nil) where last.isEmpty: specs.append(.from(a))
            case (let a?, let b?) where a <= b: specs.append(.closed(a, b))
            default: return nil
            }
        }
        return specs
    }

    /// Judges a Range header against a file of `size` bytes.
    static func parse(_ header: String?, size: Int) -> Resolution {
        guard let specs = Self.specs(header) else { return .none }
        return Self.resolve(specs, size: size)
    }

    static func resolve(_ specs: [RangeSpec], size: Int) -> Resolution {
        var ranges: [ClosedRange<Int>] = []
        for spec in specs {
            switch spec {
            case .closed(let a, let b) where a < size: ranges.append(a...min(b, size - 1))
            case .from(let a) where a < size: ranges.append(a...(size - 1))
            case .suffix(let n) where n > 0 && size > 0: ranges.append(max(0, size - n)...(size - 1))
            default: continue  // this one is unsatisfiable; the others may not be
            }
        }
        guard !ranges.isEmpty else { return .unsatisfiable }
        // Overlapping or adjacent ranges are merged (§14.2 lets a server
        // coalesce them), so no byte is sent twice however the client asks.
        ranges.sort { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<Int>] = [ranges[0]]
        for range in ranges.dropFirst() {
            if range.lowerBound <= merged[merged.count - 1].upperBound + 1 {
                merged[merged.count - 1] = merged[merged.count - 1].lowerBound...max(merged[merged.count - 1].upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return .ranges(merged)
    }

    /// A position: digits only. One too large for an Int is no less a
    /// position (past any file's end), so it is taken as `Int.max - 2`: a
    /// start there is unsatisfiable (416), an end there is clamped.
    private static func number(_ s: String) -> Int? {
        let s = s.trimmingSpaces()
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(s).map { min($0, Int.max - 2) } ?? (Int.max - 2)
    }
}
