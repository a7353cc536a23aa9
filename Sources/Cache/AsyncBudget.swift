import Synchronization

/// A budget of units (bytes, permits) that tasks take and give back, waiting
/// first come first served while it is spent, without blocking a thread. A
/// waiting task that is cancelled stops waiting and throws.
///
/// Strictly in order: a small request waits behind a large one that does not
/// fit yet, so no waiter starves.
public final class AsyncBudget: Sendable {
    private struct Waiter {
        let id: Int
        let units: Int
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var inUse = 0
        var waiters: [Waiter] = []
        var nextID = 0

        /// Grants waiters in order while the budget has room for the first.
        mutating func grant(limit: Int) -> [Waiter] {
            var granted: [Waiter] = []
            while let first = self.waiters.first, self.inUse + first.units <= limit {
                self.inUse += first.units
                granted.append(self.waiters.removeFirst())
            }
            return granted
        }
    }

    public let limit: Int
    private let state = Mutex(State())

    public init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Units taken and not yet given back.
    public var inUse: Int { self.state.withLock { $0.inUse } }
    /// Tasks waiting for room.
    public var waiting: Int { self.state.withLock { $0.waiters.count } }

    /// Takes `units` (at most `limit`), once there is room for them.
    public func acquire(_ units: Int = 1) async throws {
        let units = min(max(0, units), self.limit)
        let waiterID = Mutex<Int?>(nil)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted = self.state.withLock { state -> Bool in
                    if state.waiters.isEmpty, state.inUse + units <= self.limit {
                        state.inUse += units
                        return true
                    }
                    let id = state.nextID
                    state.nextID += 1
                    state.waiters.append(Waiter(id: id, units: units, continuation: continuation))
                    waiterID.withLock { $0 = id }
                    return false
                }
                if granted {
                    continuation.resume()
                } else if Task.isCancelled {
                    self.cancel(waiterID)
                }
            }
        } onCancel: {
            self.cancel(waiterID)
        }
    }

    /// Gives `units` back and lets waiters in. Callable from any thread.
    public func release(_ units: Int = 1) {
        let granted = self.state.withLock { state -> [Waiter] in
            state.inUse -= min(max(0, units), self.limit)
            return state.grant(limit: self.limit)
        }
        for waiter in granted { waiter.continuation.resume() }
    }

    private func cancel(_ waiterID: borrowing Mutex<Int?>) {
        guard let id = waiterID.withLock({ $0 }) else { return }
        let (cancelled, granted) = self.state.withLock { state -> (Waiter?, [Waiter]) in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return (nil, []) }
            let cancelled = state.waiters.remove(at: index)
            // The head of the queue may have been waiting behind this one.
            return (cancelled, state.grant(limit: self.limit))
        }
        cancelled?.continuation.resume(throwing: CancellationError())
        for waiter in granted { waiter.continuation.resume() }
    }
}
