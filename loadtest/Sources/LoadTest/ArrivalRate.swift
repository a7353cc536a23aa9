import ArgumentParser

/// Arrivals per second, written `5`, `5/s`, `120/m` or `0.5/s`.
struct ArrivalRate: Sendable, Codable, CustomStringConvertible, ExpressibleByArgument {
    let perSecond: Double

    init(perSecond: Double) { self.perSecond = perSecond }

    init?(argument: String) {
        let parts = argument.lowercased().split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let count = Double(parts[0]), count > 0, count.isFinite else { return nil }
        let unit = parts.count == 2 ? String(parts[1]) : "s"
        switch unit {
        case "s", "sec", "second": self.perSecond = count
        case "m", "min", "minute": self.perSecond = count / 60
        case "h", "hour": self.perSecond = count / 3600
        default: return nil
        }
    }

    var description: String { "\(self.perSecond)/s" }
}
