import Cache
import Foundation
import Synchronization

/// The export cache's bytes under CACHE_MAX_BYTES, and what goes when they
/// do not fit: the ledger of every byte (`CacheLedger`: partial files,
/// published files, deleted files still open), which published files each
/// run holds, when each run was last used (the least recently used go
/// first) and the estimated size of each run still writing (spoken for, by
/// `CacheRoom`'s decisions).
///
/// A producer's write asks here alone (`reserve`): a flush never waits for
/// the registry's lock. Eviction needs the registry too (which runs no
/// export needs): the manager calls `reserve(_:for:evicting:)` with its
/// registry's lock held, so the runs it names cannot be joined meanwhile.
/// Lock order: the registry's lock, then this one; this type never calls
/// out while it holds its own, and does no I/O: it says which files no run
/// holds any more, and the manager deletes them.
final class EvictingCacheBudget: Sendable {
    private struct State {
        var ledger = CacheLedger()
        /// The published files each run holds (its CSV, its gzip form).
        var held: [UUID: [String]] = [:]
        /// When each run was last asked for (joined or downloaded).
        var lastUsed: [UUID: Date] = [:]
        /// The estimated size of each run admitted here (`makeRoom`).
        var estimates: [UUID: Int] = [:]
    }

    /// What the budget knows of one run, for `CacheRoom`.
    struct Usage: Sendable {
        /// Bytes of the published files it holds; nil: it holds none.
        var heldBytes: Int?
        var estimate: Int
        var lastUsed: Date
    }

    /// CACHE_MAX_BYTES as resolved at start; 0: no bound.
    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    // MARK: Producers

    /// Reserves `bytes` more for `producer`'s partial file if they fit now,
    /// evicting nothing. False changes nothing.
    func reserve(_ bytes: Int, for producer: UUID) -> Bool {
        self.state.withLock { $0.ledger.reserve(bytes, for: producer, limit: self.limit) }
    }

    /// Reserves `bytes` more for `producer`, evicting `candidates` (runs no
    /// export needs, named by the registry) least recently used first while
    /// they do not fit. Tried on a copy: when even evicting them all is not
    /// enough, nil, and nothing changed. Else the runs evicted (their holds
    /// gone: the registry forgets them) and the files no run holds any more.
    func reserve(_ bytes: Int, for producer: UUID, evicting candidates: [UUID]) -> (evicted: [UUID], removals: [String])? {
        self.state.withLock { state in
            if state.ledger.reserve(bytes, for: producer, limit: self.limit) { return ([], []) }
            var trial = state
            var evicted: [UUID] = []
            var removals: [String] = []
            for run in candidates.sorted(by: { (trial.lastUsed[$0] ?? .distantPast) < (trial.lastUsed[$1] ?? .distantPast) }) {
                evicted.append(run)
                removals += Self.drop(run, from: &trial)
                if trial.ledger.reserve(bytes, for: producer, limit: self.limit) {
                    state = trial
                    return (evicted, removals)
                }
            }
            return nil
        }
    }

    /// `bytes` of a spool file now count for the export's own file.
    func transfer(_ bytes: Int, from spool: UUID, to producer: UUID) {
        self.state.withLock { $0.ledger.transfer(bytes, from: spool, to: producer) }
    }

    /// The producer's partial file is gone (published or discarded).
    func endPartial(_ producer: UUID) {
        self.state.withLock { $0.ledger.endPartial(producer) }
    }

    /// A producer's file is published: its partial bytes end, and `run`
    /// holds the file, or, when `run` is nil (it was forgotten meanwhile),
    /// nothing does. True when no run holds the file: the caller deletes it.
    func published(_ file: PublishedFile, by producer: UUID, for run: UUID?) -> Bool {
        self.state.withLock { state in
            state.ledger.endPartial(producer)
            state.ledger.hold(file)
            guard let run else { return state.ledger.release(file.path) }
            state.held[run, default: []].append(file.path)
            return false
        }
    }

    // MARK: Runs

    /// `run` holds a published file (a restored one, or another gateway's).
    func hold(_ file: PublishedFile, for run: UUID) {
        self.state.withLock { state in
            state.ledger.hold(file)
            state.held[run, default: []].append(file.path)
        }
    }

    /// The registry forgot `run`: its holds go. Returns the files no run
    /// holds any more. Safe to call for a run the budget does not know.
    func drop(_ run: UUID) -> [String] {
        self.state.withLock { Self.drop(run, from: &$0) }
    }

    private static func drop(_ run: UUID, from state: inout State) -> [String] {
        state.lastUsed[run] = nil
        state.estimates[run] = nil
        return (state.held.removeValue(forKey: run) ?? []).filter { state.ledger.release($0) }
    }

    /// `run` was asked for at `date` (the LRU order of eviction).
    func touch(_ run: UUID, at date: Date) {
        self.state.withLock { $0.lastUsed[run] = date }
    }

    /// What `run` is estimated to write, spoken for while it is queued or running.
    func setEstimate(_ bytes: Int, for run: UUID) {
        self.state.withLock { $0.estimates[run] = bytes }
    }

    /// Every byte counted now, and what the budget knows of each of `runs`.
    func usage(of runs: [UUID]) -> (total: Int, runs: [UUID: Usage]) {
        self.state.withLock { state in
            var usage: [UUID: Usage] = [:]
            for run in runs {
                let held = state.held[run].map { $0.reduce(0) { $0 + (state.ledger.size(of: $1) ?? 0) } }
                usage[run] = Usage(heldBytes: held, estimate: state.estimates[run] ?? 0, lastUsed: state.lastUsed[run] ?? .distantPast)
            }
            return (state.ledger.totalBytes, usage)
        }
    }

    // MARK: Files and readers

    /// True while some run holds the file at `path`.
    func isHeld(_ path: String) -> Bool {
        self.state.withLock { $0.ledger.isHeld(path) }
    }

    /// A reader opens the held file at `path`; nil when no run holds it.
    func open(_ path: String) -> CacheLedger.OpenToken? {
        self.state.withLock { $0.ledger.open(path) }
    }

    /// A reader closed its file.
    func close(_ token: CacheLedger.OpenToken) {
        self.state.withLock { $0.ledger.close(token) }
    }

    /// Every byte counted now.
    var totalBytes: Int { self.state.withLock { $0.ledger.totalBytes } }
}
