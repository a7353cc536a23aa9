import Synchronization

/// A file that one producer writes while any number of readers follow it.
///
/// The producer reports progress (`begin`, `append`, `complete`, `fail`); readers
/// `await` the bytes beyond their offset and read them from the file themselves,
/// each at its own pace, so a slow reader holds no memory here and never slows
/// the producer. The state lives in `GrowingFileState`; this class only guards
/// it and resumes continuations outside the lock.
public final class GrowingFile: Sendable {
    /// What a reader learns when it asks for the bytes beyond its offset.
    public enum Progress: Sendable, Equatable {
        /// Bytes up to `length` exist in the file at `path`.
        case available(path: String, length: Int)
        /// The file is finished; nothing beyond `file.size` will come.
        case complete(PublishedFile)
    }

    private typealias State = GrowingFileState<CheckedContinuation<Void, Never>>
    private let state = Mutex(State())

    public init() {}

    /// A file that is already complete, for serving finished exports the same way.
    public convenience init(completed file: PublishedFile) {
        self.init()
        self.complete(file)
    }

    public func begin(path: String) { self.resume(self.state.withLock { $0.begin(path: path) }) }
    public func append(length: Int) { self.resume(self.state.withLock { $0.append(length: length) }) }
    public func complete(_ file: PublishedFile) { self.resume(self.state.withLock { $0.complete(file) }) }
    public func fail(_ error: CacheError) { self.resume(self.state.withLock { $0.fail(error) }) }

    /// Brings `other` (a new file that has seen no event) to this file's
    /// state: how a reader that joins late catches up before it follows.
    public func copyPhase(to other: GrowingFile) {
        switch self.state.withLock({ $0.phase }) {
        case .pending:
            break
        case .writing(let path, let length):
            other.begin(path: path)
            other.append(length: length)
        case .complete(let file):
            other.complete(file)
        case .failed(let error):
            other.fail(error)
        }
    }

    /// The finished file, once there is one.
    public var completedFile: PublishedFile? {
        if case .complete(let file) = self.state.withLock({ $0.phase }) { return file }
        return nil
    }

    /// True once the producer gave up (or a cancel ended it).
    public var hasFailed: Bool {
        if case .failed = self.state.withLock({ $0.phase }) { return true }
        return false
    }

    /// Bytes written so far (the final size once complete).
    public var length: Int {
        switch self.state.withLock({ $0.phase }) {
        case .pending, .failed: 0
        case .writing(_, let length): length
        case .complete(let file): file.size
        }
    }

    /// Waits until there are bytes beyond `offset` or the file has ended.
    /// Throws the producer's error if it failed, `CancellationError` if the
    /// waiting task is cancelled.
    public func progress(beyond offset: Int) async throws -> Progress {
        while true {
            let phase = self.state.withLock { $0.phase }
            switch phase {
            case .writing(let path, let length) where length > offset:
                return .available(path: path, length: length)
            case .complete(let file):
                return .complete(file)
            case .failed(let error):
                throw error
            case .pending, .writing:
                try await self.waitForChange(beyond: offset)
            }
        }
    }

    private func waitForChange(beyond offset: Int) async throws {
        let waiterID = Mutex<Int?>(nil)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let (answer, id) = self.state.withLock { $0.wait(beyond: offset, waiter: continuation) }
                if answer != nil {
                    continuation.resume()
                } else {
                    let cancelledAlready = waiterID.withLock { stored -> Bool in
                        stored = id
                        return Task.isCancelled
                    }
                    if cancelledAlready, let waiter = self.state.withLock({ $0.removeWaiter(id: id) }) {
                        waiter.resume()
                    }
                }
            }
        } onCancel: {
            if let id = waiterID.withLock({ $0 }), let waiter = self.state.withLock({ $0.removeWaiter(id: id) }) {
                waiter.resume()
            }
        }
        try Task.checkCancellation()
    }

    private func resume(_ waiters: [CheckedContinuation<Void, Never>]) {
        for waiter in waiters { waiter.resume() }
    }
}
