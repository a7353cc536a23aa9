/// A `Range` request header against a file of known size (RFC 9110 §14.1).
/// One range is honoured; several, or a malformed header, are ignored and the
/// whole file is sent, which the RFC allows.
enum ByteRange: Equatable {
    /// No usable Range: send the whole file.
    case none
    /// Send these bytes (inclusive bounds) as a 206.
    case satisfiable(ClosedRange<Int>)
    /// A well-formed range entirely past the end: 416.
    case unsatisfiable

    static func parse(_ header: String?, size: Int) -> ByteRange {
        guard let header else { return .none }
        let trimmed = header.trimmingSpaces()
        guard trimmed.lowercased().hasPrefix("bytes=") else { return .none }
        let spec = trimmed.dropFirst(6).trimmingSpaces()
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .none }
        let first = spec[..<dash].trimmingSpaces()
        let last = spec[spec.index(after: dash)...].trimmingSpaces()
        func number(_ s: String) -> Int? {
            guard !s.isEmpty, s.count <= 18, s.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(s)
        }
        if first.isEmpty {
            // Suffix range: the last n bytes.
            guard let n = number(last) else { return .none }
            guard n > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - n)...(size - 1))
        }
        guard let start = number(first) else { return .none }
        let end: Int
        if last.isEmpty {
            end = size - 1
        } else {
            guard let e = number(last), e >= start else { return .none }
            end = min(e, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .satisfiable(start...end)
    }
}
