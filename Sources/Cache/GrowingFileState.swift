/// The life of a file that one producer writes while readers follow it, as a
/// pure state machine: events go in, the waiters to wake come out.
///
///     pending ──begin──▶ writing(length) ──complete──▶ complete
///        │                   │
///        └───────fail────────┴──────────fail──────────▶ failed
///
/// Every event is defined in every phase: an event that comes too late (a
/// `begin` after a cancel already failed the file, an `append` after the
/// end, a `complete` after a `fail`) changes nothing, because each of them
/// can really happen when a cancel races the producer. Nothing here traps.
///
/// A reader asks for the bytes beyond an offset. It is answered at once when
/// they exist or the file has ended, and otherwise waits until `append`,
/// `complete` or `fail` wakes it. The class around it (`GrowingFile`) holds it
/// under a lock and resumes the continuations it returns, outside the lock.
struct GrowingFileState<Waiter> {
    enum Phase: Equatable {
        case pending
        case writing(path: String, length: Int)
        case complete(PublishedFile)
        case failed(CacheError)

        static func == (lhs: Phase, rhs: Phase) -> Bool {
            switch (lhs, rhs) {
            case (.pending, .pending): true
            case (.writing(let a, let b), .writing(let c, let d)): a == c && b == d
            case (.complete(let a), .complete(let b)): a == b
            case (.failed(let a), .failed(let b)): a.description == b.description
            default: false
            }
        }
    }

    private(set) var phase: Phase = .pending
    private var waiters: [Int: (offset: Int, waiter: Waiter)] = [:]
    private var nextWaiterID = 0

    /// Answers a reader that wants bytes beyond `offset`: the phase when it can
    /// act on it now, or nil after parking `waiter` under the returned id.
    mutating func wait(beyond offset: Int, waiter: Waiter) -> (answer: Phase?, id: Int) {
        if self.isAnswer(for: offset) { return (self.phase, -1) }
        let id = self.nextWaiterID
        self.nextWaiterID += 1
        self.waiters[id] = (offset, waiter)
        return (nil, id)
    }

    /// Removes a parked waiter (its task was cancelled); nil if already woken.
    mutating func removeWaiter(id: Int) -> Waiter? {
        self.waiters.removeValue(forKey: id)?.waiter
    }

    /// Pending → writing. Ignored in any other phase: the file already ended
    /// (a cancel got there first) or began.
    mutating func begin(path: String) -> [Waiter] {
        guard case .pending = self.phase else { return [] }
        self.phase = .writing(path: path, length: 0)
        return self.wakeAnswered()
    }

    /// More bytes exist. Ignored unless writing, and a length that does not
    /// grow changes nothing (a file only grows).
    mutating func append(length: Int) -> [Waiter] {
        guard case .writing(let path, let old) = self.phase, length > old else { return [] }
        self.phase = .writing(path: path, length: length)
        return self.wakeAnswered()
    }

    mutating func complete(_ file: PublishedFile) -> [Waiter] {
        switch self.phase {
        case .pending, .writing:
            self.phase = .complete(file)
            return self.wakeAnswered()
        case .complete, .failed:
            return []
        }
    }

    /// Ends the file in failure; a file that already completed stays complete.
    mutating func fail(_ error: CacheError) -> [Waiter] {
        switch self.phase {
        case .pending, .writing:
            self.phase = .failed(error)
            return self.wakeAnswered()
        case .complete, .failed:
            return []
        }
    }

    private func isAnswer(for offset: Int) -> Bool {
        switch self.phase {
        case .pending: false
        case .writing(_, let length): length > offset
        case .complete, .failed: true
        }
    }

    private mutating func wakeAnswered() -> [Waiter] {
        var woken: [Waiter] = []
        for (id, entry) in self.waiters where self.isAnswer(for: entry.offset) {
            woken.append(entry.waiter)
            self.waiters[id] = nil
        }
        return woken
    }
}
