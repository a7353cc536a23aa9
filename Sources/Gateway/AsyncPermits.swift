import Synchronization

/// A counting semaphore for tasks: at most `limit` hold a permit at once;
/// the others wait, first come first served, without blocking a thread.
/// A waiting task that is cancelled stops waiting (and throws).
final class AsyncPermits: Sendable {
    private struct State {
        var available: Int
        var waiters: [(id: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID = 0
    }

    private let state: Mutex<State>

    init(limit: Int) {
        self.state = Mutex(State(available: max(1, limit)))
    }

    /// Waits for a permit; give it back with `release()`.
    func acquire() async throws {
        let waiterID = Mutex<Int?>(nil)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let granted = self.state.withLock { state -> Bool in
                    if state.available > 0, state.waiters.isEmpty {
                        state.available -= 1
                        return true
                    }
                    let id = state.nextID
                    state.nextID += 1
                    state.waiters.append((id, continuation))
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

    func release() {
        let next = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiters.isEmpty else {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }

    private func cancel(_ waiterID: borrowing Mutex<Int?>) {
        guard let id = waiterID.withLock({ $0 }) else { return }
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index).continuation
        }
        waiter?.resume(throwing: CancellationError())
    }
}
