import ArgumentParser

/// A number of bytes (or bytes per second) written `30m`, `256k`, `1g` or
/// plain; the suffixes are powers of 1024, as the Python load scripts read them.
struct ByteCount: Sendable, Codable, CustomStringConvertible, ExpressibleByArgument {
    let bytes: Int

    init(bytes: Int) { self.bytes = bytes }

    init?(argument: String) {
        var text = argument.lowercased()
        var unit = 1
        if let last = text.last, let power = ["k": 1, "m": 2, "g": 3][String(last)] {
            unit = 1 << (10 * power)
            text.removeLast()
        }
        guard let value = Double(text), value >= 0, value.isFinite, value * Double(unit) < Double(Int.max / 2) else { return nil }
        self.bytes = Int(value * Double(unit))
    }

    /// The shortest exact spelling: `30m`, `1g`, `1500`.
    var description: String {
        for (suffix, shift) in [("g", 30), ("m", 20), ("k", 10)] where self.bytes > 0 && self.bytes % (1 << shift) == 0 {
            return "\(self.bytes >> shift)\(suffix)"
        }
        return "\(self.bytes)"
    }
}
