import Foundation

/// Numbers for people: the progress line, the summary and the report.
enum Format {
    /// `  12.3s`, right-aligned.
    static func seconds(_ value: Double) -> String {
        let text = String(format: "%.1fs", value)
        return String(repeating: " ", count: max(0, 7 - text.count)) + text
    }

    static func fixed(_ value: Double, _ digits: Int = 1) -> String {
        String(format: "%.\(digits)f", value)
    }

    /// `1.5 MB` (powers of 1000, as throughput is usually given).
    static func bytes(_ value: Double) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = value
        var unit = 0
        while abs(v) >= 1000, unit < units.count - 1 {
            v /= 1000
            unit += 1
        }
        return unit == 0 ? "\(Int(v)) B" : "\(Self.fixed(v, 1)) \(units[unit])"
    }

    /// `45.1 MiB` from kB (memory as /proc gives it).
    static func mebibytes(kilobytes: Int) -> String {
        "\(Self.fixed(Double(kilobytes) / 1024, 1)) MiB"
    }
}
