import Foundation

/// What a client asked to export, validated. Built only by `parse`, so every
/// value in it is one the SQL builder may use.
struct ExportRequest: Sendable, Equatable {
    var countryCodes: [String] = []
    var subscriptionTiers: [String] = []
    /// The decimal text as given (validated), so `0` and `0.5` stay exact.
    var minLifetimeValue: String?
    var columns: [String] = UsersTable.columns
    var delimiter: Character = ","
    var quote: Character = "\""
    /// The spreadsheet-friendly options; see `CSVOptions`.
    var options = CSVOptions()

    static let parameterNames = [
        "country_code", "subscription_tier", "min_ltv", "columns", "delimiter", "quoteChar",
        "header", "bom", "lineEnding", "nullAs", "excel",
    ]

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
            let delimiter: String
            let quote: String
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
            delimiter: String(self.delimiter),
            quote: String(self.quote),
            header: self.options.header,
            nullAs: self.options.nullAs,
            byteOrderMark: self.options.byteOrderMark,
            crlf: self.options.crlf,
            guardFormulas: self.options.guardFormulas
        )
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // Encoding strings and booleans cannot fail.
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
        pairs.append(("delimiter", String(self.delimiter)))
        pairs.append(("quoteChar", String(self.quote)))
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
        let whole = parts[0].drop(while: { $0 == "0" })
        let fraction = parts.count > 1 ? parts[1].reversed().drop(while: { $0 == "0" }).reversed() : []
        var text = whole.isEmpty ? "0" : String(whole)
        if !fraction.isEmpty { text += "." + String(fraction) }
        return negative && text != "0" ? "-" + text : text
    }

    /// Parses query parameters (already percent-decoded, in order). Every bad
    /// value, an unknown name or a repeated single-valued one is a `ParameterError`.
    static func parse(_ parameters: [(name: String, value: String)]) throws(ParameterError) -> ExportRequest {
        var request = ExportRequest()
        var seen = Set<String>()
        // Explicit options win over the excel preset, whatever their order.
        var explicit: (bom: Bool?, crlf: Bool?) = (nil, nil)
        var excel = false
        for (name, value) in parameters {
            let repeatable = name == "country_code" || name == "subscription_tier"
            if seen.contains(name), !repeatable {
                throw ParameterError(parameter: name, message: "\(name) may be given only once")
            }
            seen.insert(name)
            switch name {
            case "country_code":
                request.countryCodes += try Self.list(name, value).map { code throws(ParameterError) in
                    guard code.count == 2, code.allSatisfy({ $0.isASCII && $0.isLetter }) else {
                        throw ParameterError(parameter: name, message: "\(name) must be ISO 3166-1 alpha-2 codes such as US or DE, one or a comma list; got \(quoted(code))")
                    }
                    return code.uppercased()
                }
            case "subscription_tier":
                request.subscriptionTiers += try Self.list(name, value).map { tier throws(ParameterError) in
                    let lower = tier.lowercased()
                    guard UsersTable.tiers.contains(lower) else {
                        throw ParameterError(parameter: name, message: "\(name) must be one or a comma list of \(UsersTable.tiers.joined(separator: ", ")); got \(quoted(tier))", allowed: UsersTable.tiers)
                    }
                    return lower
                }
            case "min_ltv":
                guard Self.isDecimal(value) else {
                    throw ParameterError(parameter: name, message: "min_ltv must be a decimal number such as 0, 100 or 99.95; got \(quoted(value))")
                }
                request.minLifetimeValue = value
            case "columns":
                let columns = try Self.list(name, value)
                for column in columns where !UsersTable.columns.contains(column) {
                    throw ParameterError(parameter: name, message: "columns must be a comma list of \(UsersTable.columns.joined(separator: ", ")); unknown column \(quoted(column))", allowed: UsersTable.columns)
                }
                if let repeated = columns.first(where: { column in columns.filter { $0 == column }.count > 1 }) {
                    throw ParameterError(parameter: name, message: "columns names \(quoted(repeated)) more than once")
                }
                request.columns = columns
            case "delimiter":
                request.delimiter = try Self.character(name, value, allowed: Self.delimiterCharacters)
            case "quoteChar":
                request.quote = try Self.character(name, value, allowed: Self.quoteCharacters)
            case "header":
                request.options.header = try Self.boolean(name, value)
            case "bom":
                explicit.bom = try Self.boolean(name, value)
            case "excel":
                excel = try Self.boolean(name, value)
            case "lineEnding":
                switch value.lowercased() {
                case "lf": explicit.crlf = false
                case "crlf": explicit.crlf = true
                default: throw ParameterError(parameter: name, message: "lineEnding must be lf or crlf; got \(quoted(value))", allowed: ["lf", "crlf"])
                }
            case "nullAs":
                guard value.count <= 32, !value.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                    throw ParameterError(parameter: name, message: "nullAs must be at most 32 characters with no line breaks")
                }
                request.options.nullAs = value
            default:
                throw ParameterError(parameter: name, message: "unknown parameter \(quoted(name)); allowed are \(Self.parameterNames.joined(separator: ", "))", allowed: Self.parameterNames)
            }
        }
        if request.delimiter == request.quote {
            throw ParameterError(parameter: "quoteChar", message: "quoteChar and delimiter must be different characters")
        }
        if let null = request.options.nullAs, null.contains(request.delimiter) || null.contains(request.quote) {
            throw ParameterError(parameter: "nullAs", message: "nullAs must not contain the delimiter or the quote character")
        }
        request.options.byteOrderMark = explicit.bom ?? excel
        request.options.crlf = explicit.crlf ?? excel
        request.options.guardFormulas = excel
        return request
    }

    /// Printable ASCII punctuation, space and tab: what PostgreSQL accepts as a
    /// CSV delimiter, less letters and digits (which would make unreadable files).
    static let delimiterCharacters: [Character] = ["\t", " "] + punctuation
    static let quoteCharacters: [Character] = punctuation
    private static let punctuation: [Character] = Array("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")

    private static func boolean(_ name: String, _ value: String) throws(ParameterError) -> Bool {
        switch value.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw ParameterError(parameter: name, message: "\(name) must be true or false; got \(quoted(value))", allowed: ["true", "false"])
        }
    }

    private static func list(_ name: String, _ value: String) throws(ParameterError) -> [String] {
        let items = value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingSpaces() }
        guard !items.contains(where: \.isEmpty) else {
            throw ParameterError(parameter: name, message: "\(name) must be a comma list with no empty items; got \(quoted(value))")
        }
        return items
    }

    private static func character(_ name: String, _ value: String, allowed: [Character]) throws(ParameterError) -> Character {
        let named: [String: Character] = ["tab": "\t", "\\t": "\t", "space": " "]
        if let character = named[value] { return character }
        guard value.count == 1, let character = value.first, allowed.contains(character) else {
            let shown = allowed.map { $0 == "\t" ? "tab" : $0 == " " ? "space" : String($0) }.joined(separator: " ")
            throw ParameterError(parameter: name, message: "\(name) must be one character of: \(shown); got \(quoted(value))")
        }
        return character
    }

    /// Up to ten digits before the point and any after it, an optional sign:
    /// what numeric(12,2) can be compared with.
    static func isDecimal(_ value: String) -> Bool {
        var rest = Substring(value)
        if rest.first == "-" || rest.first == "+" { rest = rest.dropFirst() }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = parts.first, !whole.isEmpty, whole.count <= 10 else { return false }
        let digits = parts.count == 2 ? whole + parts[1] : whole
        return (parts.count == 1 || !parts[1].isEmpty && parts[1].count <= 10) && digits.allSatisfy { $0.isASCII && $0.isNumber }
    }
}

/// A bad query parameter: a 400 whose JSON names the parameter.
struct ParameterError: Error, Equatable {
    let parameter: String
    let message: String
    var allowed: [String]? = nil
}

private func quoted(_ value: some StringProtocol) -> String {
    let shown = value.count > 40 ? value.prefix(40) + "…" : Substring(value)
    return "\"\(shown)\""
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
