import Foundation

/// What a client asked to export, validated. Built only by `parse`, so every
/// value in it is one the SQL builder may use and PostgreSQL will accept.
///
/// Every parameter is judged on its UTF-8 bytes, as PostgreSQL judges COPY's
/// options, never on Swift `Character`s: a comma followed by a combining
/// accent is one Character but two code points and three bytes, and the
/// Greek question mark (U+037E) *equals* `;` as a Swift string while being two
/// bytes that PostgreSQL rejects as a delimiter. Names, lists and keywords are
/// compared byte for byte (ASCII case folding only), and lengths are bytes.
struct ExportRequest: Sendable, Equatable {
    var countryCodes: [String] = []
    var subscriptionTiers: [String] = []
    /// The decimal text as given (validated), so `0` and `0.5` stay exact.
    var minLifetimeValue: String?
    var columns: [String] = UsersTable.columns
    /// One ASCII byte each (see `parse`).
    var delimiter = UInt8(ascii: ",")
    var quote = UInt8(ascii: "\"")
    /// The spreadsheet-friendly options; see `CSVOptions`.
    var options = CSVOptions()

    /// The longest `nullAs`, in bytes: every NULL in the file is written as
    /// it, so this bounds how much it can swell a file.
    static let maxNullBytes = 32

    static let parameterNames = [
        "country_code", "subscription_tier", "min_ltv", "columns", "delimiter", "quoteChar",
        "header", "bom", "lineEnding", "nullAs", "excel",
    ]

    var delimiterText: String { String(UnicodeScalar(self.delimiter)) }
    var quoteText: String { String(UnicodeScalar(self.quote)) }

    /// The canonical form of the request: two requests with the same key
    /// produce the same bytes and may share one run and one file. Filter
    /// lists are sets (sorted, deduplicated), the decimal is normalised
    /// (`5`, `+5.00` and `05` are one value), columns keep their order.
    var cacheKey: String {
        struct Key: Encodable {
            let countryCodes: [String]
            let subscriptionTiers: [String]
            let minLifetimeValue: String?
            let columns: [String]
            let delimiter: UInt8
            let quote: UInt8
            let header: Bool
            let nullAs: String?
            let byteOrderMark: Bool
            let crlf: Bool
            let guardFormulas: Bool
        }
        let key = Key(
            countryCodes: Set(self.countryCodes).sorted(),
            subscriptionTiers: Set(self.subscriptionTiers).sorted(),
            minLifetimeValue: self.minLifetimeValue.map(Self.normalizedDecimal),
            columns: self.columns,
            delimiter: self.delimiter,
            quote: self.quote,
            header: self.options.header,
            nullAs: self.options.nullAs,
            byteOrderMark: self.options.byteOrderMark,
            crlf: self.options.crlf,
            guardFormulas: self.options.guardFormulas
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // Encoding strings, numbers and booleans cannot fail.
        return String(decoding: (try? encoder.encode(key)) ?? Data(), as: UTF8.self)
    }

    /// The request as a query string that `parse` reads back to an equal
    /// request: how the journal stores it.
    var canonicalQuery: String {
        var pairs: [(String, String)] = []
        if !self.countryCodes.isEmpty { pairs.append(("country_code", self.countryCodes.joined(separator: ","))) }
        if !self.subscriptionTiers.isEmpty { pairs.append(("subscription_tier", self.subscriptionTiers.joined(separator: ","))) }
        if let minimum = self.minLifetimeValue { pairs.append(("min_ltv", minimum)) }
        pairs.append(("columns", self.columns.joined(separator: ",")))
        pairs.append(("delimiter", self.delimiterText))
        pairs.append(("quoteChar", self.quoteText))
        pairs.append(("header", String(self.options.header)))
        if let null = self.options.nullAs { pairs.append(("nullAs", null)) }
        // excel=true is the only way to ask for the guard; the explicit bom and
        // lineEnding after it win over the rest of its preset.
        if self.options.guardFormulas { pairs.append(("excel", "true")) }
        pairs.append(("bom", String(self.options.byteOrderMark)))
        pairs.append(("lineEnding", self.options.crlf ? "crlf" : "lf"))
        return pairs.map { "\($0)=\(QueryString.encode($1))" }.joined(separator: "&")
    }

    /// A validated decimal without sign noise, leading or trailing zeros.
    static func normalizedDecimal(_ value: String) -> String {
        var rest = Substring(value)
        var negative = false
        if rest.first == "+" || rest.first == "-" {
            negative = rest.first == "-"
            rest = rest.dropFirst()
        }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        let whole = (parts.first ?? "").drop(while: { $0 == "0" })
        let fraction = parts.count > 1 ? parts[1].reversed().drop(while: { $0 == "0" }).reversed() : []
        var text = whole.isEmpty ? "0" : String(whole)
        if !fraction.isEmpty { text += "." + String(fraction) }
        return negative && text != "0" ? "-" + text : text
    }

    /// Parses query parameters (already percent-decoded and valid UTF-8, in
    /// order). Every bad value, an unknown name or a repeated single-valued
    /// one is a `ParameterError` naming the parameter.
    static func parse(_ parameters: [(name: String, value: String)]) throws(ParameterError) -> ExportRequest {
        var request = ExportRequest()
        var seen = Set<[UInt8]>()
        // Explicit options win over the excel preset, whatever their order.
        var explicit: (bom: Bool?, crlf: Bool?) = (nil, nil)
        var excel = false
        for (rawName, rawValue) in parameters {
            let name = Array(rawName.utf8)
            let value = Array(rawValue.utf8)
            guard let known = Self.parameterNames.first(where: { Array($0.utf8) == name }) else {
                throw ParameterError(
                    parameter: String(quoted(name).dropFirst().dropLast()), message: "unknown parameter \(quoted(name)); allowed are \(Self.parameterNames.joined(separator: ", "))",
                    allowed: Self.parameterNames)
            }
            let repeatable = known == "country_code" || known == "subscription_tier"
            if seen.contains(name), !repeatable {
                throw ParameterError(parameter: known, message: "\(known) may be given only once")
            }
            seen.insert(name)
            switch known {
            case "country_code":
                request.countryCodes += try Self.list(known, value).map { code throws(ParameterError) in
                    guard code.count == 2, code.allSatisfy(ASCII.isLetter) else {
                        throw ParameterError(parameter: known, message: "country_code must be ISO 3166-1 alpha-2 codes such as US or DE, one or a comma list; got \(quoted(code))")
                    }
                    return String(decoding: code.map(ASCII.upper), as: UTF8.self)
                }
            case "subscription_tier":
                request.subscriptionTiers += try Self.list(known, value).map { tier throws(ParameterError) in
                    let lower = tier.map(ASCII.lower)
                    guard let match = UsersTable.tiers.first(where: { Array($0.utf8) == lower }) else {
                        throw ParameterError(
                            parameter: known, message: "subscription_tier must be one or a comma list of \(UsersTable.tiers.joined(separator: ", ")); got \(quoted(tier))", allowed: UsersTable.tiers)
                    }
                    return match
                }
            case "min_ltv":
                guard Self.isDecimal(value) else {
                    throw ParameterError(parameter: known, message: "min_ltv must be a decimal number such as 0, 100 or 99.95 (at most 10 digits before and after the point); got \(quoted(value))")
                }
                request.minLifetimeValue = rawValue
            case "columns":
                let columns = try Self.list(known, value).map { column throws(ParameterError) in
                    guard let match = UsersTable.columns.first(where: { Array($0.utf8) == column }) else {
                        throw ParameterError(
                            parameter: known, message: "columns must be a comma list of \(UsersTable.columns.joined(separator: ", ")); unknown column \(quoted(column))", allowed: UsersTable.columns)
                    }
                    return match
                }
                if let repeated = columns.first(where: { column in columns.filter { $0 == column }.count > 1 }) {
                    throw ParameterError(parameter: known, message: "columns names \(quoted(Array(repeated.utf8))) more than once")
                }
                request.columns = columns
            case "delimiter":
                request.delimiter = try Self.byte(known, value)
                if request.delimiter == ASCII.cr || request.delimiter == ASCII.lf {
                    throw ParameterError(parameter: known, message: "delimiter cannot be a carriage return or a line feed")
                }
            case "quoteChar":
                request.quote = try Self.byte(known, value)
                // PostgreSQL takes these, but a file quoted with a line break
                // cannot be split into records by any CSV reader.
                if request.quote == ASCII.cr || request.quote == ASCII.lf {
                    throw ParameterError(parameter: known, message: "quoteChar cannot be a carriage return or a line feed")
                }
            case "header":
                request.options.header = try Self.boolean(known, value)
            case "bom":
                explicit.bom = try Self.boolean(known, value)
            case "excel":
                excel = try Self.boolean(known, value)
            case "lineEnding":
                switch String(decoding: value.map(ASCII.lower), as: UTF8.self) {
                case "lf": explicit.crlf = false
                case "crlf": explicit.crlf = true
                default: throw ParameterError(parameter: known, message: "lineEnding must be lf or crlf; got \(quoted(value))", allowed: ["lf", "crlf"])
                }
            default:  // nullAs
                guard value.count <= Self.maxNullBytes else {
                    throw ParameterError(parameter: known, message: "nullAs must be at most \(Self.maxNullBytes) bytes of UTF-8; got \(value.count)")
                }
                guard !value.contains(ASCII.cr), !value.contains(ASCII.lf), !value.contains(0) else {
                    throw ParameterError(parameter: known, message: "nullAs cannot contain a carriage return, a line feed or a NUL byte")
                }
                request.options.nullAs = rawValue
            }
        }
        if request.delimiter == request.quote {
            throw ParameterError(parameter: "quoteChar", message: "quoteChar and delimiter must be different characters")
        }
        if let null = request.options.nullAs {
            // Bytes, as COPY searches: the delimiter and quote are ASCII, and
            // an ASCII byte never occurs inside a multi-byte UTF-8 sequence.
            if null.utf8.contains(request.delimiter) {
                throw ParameterError(parameter: "nullAs", message: "nullAs must not contain the delimiter")
            }
            if null.utf8.contains(request.quote) {
                throw ParameterError(parameter: "nullAs", message: "nullAs must not contain the quote character")
            }
        }
        request.options.byteOrderMark = explicit.bom ?? excel
        request.options.crlf = explicit.crlf ?? excel
        request.options.guardFormulas = excel
        // A code or tier named twice is one filter: each is kept once, where
        // it first came, so the query (and the status JSON's `query`) stays
        // as short as the filter it means.
        request.countryCodes = Self.unique(request.countryCodes)
        request.subscriptionTiers = Self.unique(request.subscriptionTiers)
        return request
    }

    private static func unique(_ values: [String]) -> [String] {
        var seen = Set<String>()
        return values.filter { seen.insert($0).inserted }
    }

    /// Names a client may use for characters awkward in a URL.
    private static let namedBytes: [String: UInt8] = ["tab": 9, "\\t": 9, "space": 32]

    /// One ASCII byte (1 through 127; NUL cannot reach PostgreSQL), given as
    /// itself or by name: what COPY accepts as a single one-byte character.
    private static func byte(_ name: String, _ value: [UInt8]) throws(ParameterError) -> UInt8 {
        if let named = Self.namedBytes[String(decoding: value, as: UTF8.self)] { return named }
        guard value.count == 1, let byte = value.first, byte >= 1, byte <= 127 else {
            throw ParameterError(parameter: name, message: "\(name) must be a single one-byte (ASCII) character, or tab or space; got \(quoted(value)) (\(value.count) bytes)")
        }
        return byte
    }

    private static func boolean(_ name: String, _ value: [UInt8]) throws(ParameterError) -> Bool {
        switch String(decoding: value.map(ASCII.lower), as: UTF8.self) {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default:
            throw ParameterError(parameter: name, message: "\(name) must be true or false (1 or 0, yes or no, in any case); got \(quoted(value))", allowed: ["true", "false", "1", "0", "yes", "no"])
        }
    }

    /// Comma-separated items, ASCII spaces around each trimmed.
    private static func list(_ name: String, _ value: [UInt8]) throws(ParameterError) -> [[UInt8]] {
        let items = value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).map { ASCII.trimmingSpaces($0) }
        guard !items.contains(where: \.isEmpty) else {
            throw ParameterError(parameter: name, message: "\(name) must be a comma list with no empty items; got \(quoted(value))")
        }
        return items
    }

    /// Up to ten ASCII digits before the point and up to ten after it, an
    /// optional sign: what numeric(12,2) can be compared with.
    static func isDecimal(_ text: String) -> Bool { Self.isDecimal(Array(text.utf8)) }

    static func isDecimal(_ value: [UInt8]) -> Bool {
        var rest = value[...]
        if rest.first == UInt8(ascii: "-") || rest.first == UInt8(ascii: "+") { rest = rest.dropFirst() }
        let parts = rest.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 1 || parts.count == 2, let whole = parts.first, (1...10).contains(whole.count) else { return false }
        if parts.count == 2, !(1...10).contains(parts[1].count) { return false }
        return parts.allSatisfy { $0.allSatisfy(ASCII.isDigit) }
    }
}

/// A bad query parameter: a 400 whose JSON names the parameter.
struct ParameterError: Error, Equatable {
    let parameter: String
    let message: String
    var allowed: [String]? = nil
}

/// A value as the client sent it, for a message: at most 40 code points
/// (not Characters: one Character can be thousands of combining marks).
func quoted(_ value: some Collection<UInt8>) -> String {
    let scalars = String(decoding: value, as: UTF8.self).unicodeScalars
    var shown = String.UnicodeScalarView(scalars.prefix(40))
    if scalars.count > 40 { shown.append("…") }
    return "\"\(String(shown))\""
}

/// Byte tests and case folding of ASCII, the only case folding parameters get.
enum ASCII {
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")

    static func isLetter(_ byte: UInt8) -> Bool { (65...90).contains(byte) || (97...122).contains(byte) }
    static func isDigit(_ byte: UInt8) -> Bool { (48...57).contains(byte) }
    static func lower(_ byte: UInt8) -> UInt8 { (65...90).contains(byte) ? byte + 32 : byte }
    static func upper(_ byte: UInt8) -> UInt8 { (97...122).contains(byte) ? byte - 32 : byte }

    static func trimmingSpaces(_ bytes: some Collection<UInt8>) -> [UInt8] {
        Array(bytes.drop(while: { $0 == 32 }).reversed().drop(while: { $0 == 32 }).reversed())
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
