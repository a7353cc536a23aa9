/// The spreadsheet-friendly options of an export, beyond what plain COPY
/// writes by default. `header` and `nullAs` are COPY's own options; the rest
/// are transformations of its output:
///
/// - `byteOrderMark`: the file starts with EF BB BF (UTF-8 BOM), so Excel
///   reads it as UTF-8.
/// - `crlf`: each record ends with CR LF instead of LF. Line breaks inside
///   quoted fields stay as they are: each COPY message is one record, and
///   only its final LF is replaced.
/// - `guardFormulas` (OWASP CSV injection): a text field that starts with
///   `=`, `+`, `-`, `@`, tab or carriage return gets a `'` in front, so a
///   spreadsheet shows it as text instead of running it. Numbers and
///   timestamps are left alone. Done in the SELECT, so COPY still quotes the
///   result correctly.
///
/// `excel=true` sets all three; an explicit `bom` or `lineEnding` wins over it.
struct CSVOptions: Sendable, Equatable {
    var header = true
    var nullAs: String?
    var byteOrderMark = false
    var crlf = false
    var guardFormulas = false

    static let utf8BOM: [UInt8] = [0xEF, 0xBB, 0xBF]
}
