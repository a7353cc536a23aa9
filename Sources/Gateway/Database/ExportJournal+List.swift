import Foundation

/// The page query of `GET /exports`: a caller's exports, newest first,
/// by keyset (created_at, id), so a page costs the same however deep it is
/// and exports made between two pages never shift or repeat an entry.
extension ExportJournal {
    /// One export of a page, and where it sits in the order.
    struct Listed: Sendable {
        let id: UUID
        /// `created_at` in microseconds since 1970: PostgreSQL's own
        /// resolution, so a cursor names a position exactly.
        let createdMicros: Int64
    }

    /// Up to `limit` unexpired exports older than `before` (all when nil),
    /// newest first: those of the token `owner`, or every export when nil
    /// (a gateway without tokens).
    func listExports(owner: String?, before: ExportCursor?, limit: Int) throws -> [Listed] {
        var conditions = ["e.expired_at IS NULL"]
        var parameters: [String?] = []
        if let owner {
            parameters.append(owner)
            conditions.append("e.owner = $1")
        }
        if let before {
            parameters.append(String(before.createdMicros))
            parameters.append(before.id.uuidString)
            let micros = parameters.count - 1
            conditions.append("(e.created_at, e.id) < ('epoch'::timestamptz + $\(micros)::bigint * interval '1 microsecond', $\(micros + 1)::uuid)")
        }
        parameters.append(String(limit))
        let rows = try self.withRetryOnce("list") { db in
            try db.rows(
                """
                SELECT e.id, (extract(epoch FROM e.created_at) * 1000000)::bigint AS created_micros FROM gateway.exports e
                WHERE \(conditions.joined(separator: " AND "))
                ORDER BY e.created_at DESC, e.id DESC LIMIT $\(parameters.count)::int
                """, parameters: parameters)
        }
        return rows.compactMap { row in
            guard let id = row.uuid("id"), let micros = row.int64("created_micros") else { return nil }
            return Listed(id: id, createdMicros: micros)
        }
    }
}

/// Where a page of `GET /exports` ends: `<microseconds>_<export id>`.
/// Opaque to clients, and judged on its bytes like every other parameter.
struct ExportCursor: Sendable, Equatable {
    let createdMicros: Int64
    let id: UUID

    init(createdMicros: Int64, id: UUID) {
        self.createdMicros = createdMicros
        self.id = id
    }

    init?(_ text: String) {
        let parts = text.utf8.split(separator: UInt8(ascii: "_"), omittingEmptySubsequences: false)
        // Exactly as `text` writes it: the id in lower case, the number without a leading zero.
        guard parts.count == 2, (1...18).contains(parts[0].count), parts[0].allSatisfy(ASCII.isDigit),
            parts[0].first != UInt8(ascii: "0") || parts[0].count == 1, parts[1].count == 36,
            !parts[1].contains(where: { (65...90).contains($0) }),
            let micros = Int64(String(decoding: parts[0], as: UTF8.self)),
            let id = UUID(uuidString: String(decoding: parts[1], as: UTF8.self))
        else { return nil }
        self.init(createdMicros: micros, id: id)
    }

    var text: String { "\(self.createdMicros)_\(self.id.uuidString.lowercased())" }
}
