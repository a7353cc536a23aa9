/// Comparison of secrets whose time does not depend on where they differ.
enum ConstantTime {
    /// True when `a` and `b` hold the same bytes. Every byte is compared
    /// (no early exit); only the lengths, which are not secret here (digests,
    /// hex signatures of a fixed size), can end it sooner.
    static func equal(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
