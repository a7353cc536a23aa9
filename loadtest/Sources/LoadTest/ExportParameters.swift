/// Random export requests: filters, columns and every format option the API
/// has, drawn so that most combinations come up in a few hundred sessions.
/// Keys the user fixed with `--query` are left as given.
struct ExportParameters: Sendable {
    static let countries = ["US", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU", "ES"]
    static let tiers = ["free", "basic", "pro", "enterprise"]
    static let columns = ["id", "email", "full_name", "country_code", "subscription_tier", "lifetime_value", "created_at", "last_login_at", "notes"]

    /// `--query`, as given (already percent-encoded by the user).
    let base: String
    private let fixedKeys: Set<String>

    init(base: String) {
        self.base = base
        self.fixedKeys = Set(base.split(separator: "&").compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
    }

    /// A random query string (keys in a fixed order, so equal choices give equal strings).
    func random(using rng: inout SplitMix64) -> String {
        var pairs: [(String, String)] = []
        func add(_ key: String, _ value: String) {
            if !self.fixedKeys.contains(key) { pairs.append((key, value)) }
        }
        if rng.chance(0.5) { add("country_code", Self.countries.shuffled(using: &rng).prefix(Int.random(in: 1...3, using: &rng)).joined(separator: ",")) }
        if rng.chance(0.4) { add("subscription_tier", Self.tiers.shuffled(using: &rng).prefix(Int.random(in: 1...2, using: &rng)).joined(separator: ",")) }
        if rng.chance(0.5) { add("min_ltv", ["0", "100", "2500", "5000", "9000", "9900", "9990", "99.95"].randomElement(using: &rng) ?? "0") }
        if rng.chance(0.5) { add("columns", Self.columns.shuffled(using: &rng).prefix(Int.random(in: 1...Self.columns.count, using: &rng)).joined(separator: ",")) }
        let delimiter = rng.chance(0.25) ? [";", "tab", "|"].randomElement(using: &rng) : nil
        if let delimiter { add("delimiter", delimiter) }
        if rng.chance(0.05) { add("quoteChar", "'") }
        if rng.chance(0.15) { add("header", "false") }
        if rng.chance(0.15) { add("nullAs", ["NULL", "\\N", "(null)"].randomElement(using: &rng) ?? "NULL") }
        if rng.chance(0.1) { add("bom", "true") }
        if rng.chance(0.15) { add("lineEnding", "crlf") }
        if rng.chance(0.1) { add("excel", "true") }
        return Self.join(base: self.base, pairs)
    }

    /// A request no earlier run of this seed made (for coalescing bursts):
    /// a `min_ltv` with cents and a random column list.
    func unique(using rng: inout SplitMix64) -> String {
        var pairs: [(String, String)] = []
        if !self.fixedKeys.contains("min_ltv") {
            let cents = Int.random(in: 500_000...999_000, using: &rng)
            pairs.append(("min_ltv", "\(cents / 100).\(String(cents % 100 + 100).dropFirst())"))
        }
        if !self.fixedKeys.contains("columns") {
            pairs.append(("columns", Self.columns.shuffled(using: &rng).prefix(Int.random(in: 2...Self.columns.count, using: &rng)).joined(separator: ",")))
        }
        return Self.join(base: self.base, pairs)
    }

    private static func join(base: String, _ pairs: [(String, String)]) -> String {
        let generated = pairs.map { "\($0.0)=\(Self.encode($0.1))" }
        return ([base].filter { !$0.isEmpty } + generated).joined(separator: "&")
    }

    /// Percent-encodes all but RFC 3986's unreserved characters and the comma of lists.
    static func encode(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: ","):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + Hex.string([byte]).uppercased()
            }
        }
        return out
    }
}
