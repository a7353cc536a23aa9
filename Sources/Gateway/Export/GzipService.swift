import Cache
import Foundation
import ServiceLifecycle
import Synchronization

/// The gzip forms of runs' CSV files: each made once per run, by whoever
/// asks first, at most GZIP_WORKERS at once with GZIP_QUEUE more waiting;
/// past that a reader gets the CSV uncompressed. A `Service`: its
/// compressors run in `run()` and stop at shutdown. Its own lock guards only
/// the count of forms admitted (taken under a run's gzip lock, never the
/// other way round).
final class GzipService: Service, Sendable {
    /// Where one form's bytes go, made by the manager for each form from
    /// the form's own reservation id (the cache's room, the publish).
    typealias Storage = @Sendable (_ producer: UUID) -> ProducerStorage

    private struct Request: Sendable {
        let run: ExportRun
        let target: SharedFile
        let storage: Storage
    }

    private struct State {
        /// Forms admitted: being made, or waiting for a compressor.
        var admitted = 0
        var stopping = false
    }

    private let producer: GzipProducer
    private let compressors: AsyncBudget
    private let limit: Int
    private let requests: AsyncStream<Request>
    private let sink: AsyncStream<Request>.Continuation
    private let state = Mutex(State())

    init(producer: GzipProducer, workers: Int, queue: Int) {
        self.producer = producer
        self.compressors = AsyncBudget(limit: workers)
        self.limit = workers + queue
        (self.requests, self.sink) = AsyncStream.makeStream()
    }

    /// Makes the forms asked for until shutdown; then stops the ones still compressing.
    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Returns on graceful shutdown, throws when cancelled: both end it.
                try? await gracefulShutdown()
                self.stop()
                // Only now may `run` end: ending before the service group asks
                // counts as a failure, even when the shutdown began earlier.
                self.sink.finish()
            }
            for await request in self.requests {
                group.addTask { await self.produce(request) }
            }
            group.cancelAll()
        }
    }

    /// No new form starts from now on (a shutdown has begun); those under
    /// way stop when the service group's shutdown reaches `run`.
    func stop() {
        self.state.withLock { $0.stopping = true }
    }

    /// The gzip form of `run`'s CSV: the one made or being made, else a new
    /// one when `start` (a HEAD never starts one) and the bound allows. Nil:
    /// none, and none may start now.
    func form(of run: ExportRun, start: Bool, storage: @escaping Storage) -> SharedFile? {
        guard start else { return run.existingGzip }
        return run.gzipFile(
            admit: { self.admit() },
            start: { target in
                if case .terminated = self.sink.yield(Request(run: run, target: target, storage: storage)) {
                    target.fail(.failed("the server is shutting down"))
                    self.state.withLock { $0.admitted -= 1 }
                }
            })
    }

    /// True when a new form could start now (what a HEAD answers as).
    var couldStart: Bool {
        self.state.withLock { !$0.stopping && $0.admitted < self.limit }
    }

    private func admit() -> Bool {
        self.state.withLock { state in
            guard !state.stopping, state.admitted < self.limit else { return false }
            state.admitted += 1
            return true
        }
    }

    /// Makes one form once a compressor is free.
    private func produce(_ request: Request) async {
        defer { self.state.withLock { $0.admitted -= 1 } }
        do {
            try await self.compressors.acquire()
        } catch {
            request.target.fail(.failed("the server is shutting down"))
            return
        }
        defer { self.compressors.release() }
        let storage = request.storage(UUID())
        guard await self.producer.run(source: request.run.csv.primary, target: request.target, storage: storage) != nil else { return }
        Telemetry.gzipFormsMade.increment()
    }
}
