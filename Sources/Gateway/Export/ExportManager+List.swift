import Foundation

/// `GET /exports`: the caller's exports, a page at a time.
extension ExportManager {
    struct Page: Sendable {
        let jobs: [ExportJob]
        /// Where the next page starts; nil on the last page.
        let next: ExportCursor?
    }

    enum ListOutcome: Sendable {
        case page(Page)
        /// The journal has not been read yet (at start).
        case unknownYet
        /// The database did not answer.
        case unavailable
    }

    /// Up to `limit` of the caller's exports older than `cursor`, newest
    /// first. The order and the page come from the database, so exports made
    /// on other gateways are listed too; each entry is then looked up as
    /// `GET /exports/{id}/status` would (known ones from memory, with their
    /// live progress; others, made on another gateway, from the database). An export that expires or is deleted in between is
    /// left out, so a page may hold fewer than `limit`.
    func list(for caller: Caller, after cursor: ExportCursor?, limit: Int) async -> ListOutcome {
        guard self.isJournalLoaded else { return .unknownYet }
        let owner: String?
        switch caller {
        case .open: owner = nil
        case .token(let id): owner = id
        case .link: return .page(Page(jobs: [], next: nil))
        }
        let rows: [ExportJournal.Listed]
        do {
            rows = try await self.onDatabasePool { try $0.journal.listExports(owner: owner, before: cursor, limit: limit + 1) }
        } catch {
            return .unavailable
        }
        var jobs: [ExportJob] = []
        for row in rows.prefix(limit) {
            // Not a use of the file: a page left open must not keep every
            // listed export's file from eviction.
            switch await self.lookup(row.id, for: caller, touch: false) {
            case .found(let job): jobs.append(job)
            case .expired, .notFound: continue
            case .unknownYet: return .unavailable
            }
        }
        let last = rows.count > limit ? rows[limit - 1] : nil
        return .page(Page(jobs: jobs, next: last.map { ExportCursor(createdMicros: $0.createdMicros, id: $0.id) }))
    }
}
