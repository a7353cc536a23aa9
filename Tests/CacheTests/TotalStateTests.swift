import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Cache

/// Every event of a growing file in every phase: nothing traps, late events
/// change nothing, and the file only ever moves forward.
struct GrowingFileStateTests {
    enum Event: CaseIterable { case begin, append, shrink, complete, fail }

    func apply(_ event: Event, to state: inout GrowingFileState<Int>) {
        switch event {
        case .begin: _ = state.begin(path: "/partial")
        case .append: _ = state.append(length: 100)
        case .shrink: _ = state.append(length: 10)
        case .complete: _ = state.complete(PublishedFile(path: "/object", size: 100, sha256: "x"))
        case .fail: _ = state.fail(.cancelled())
        }
    }

    @Test func everySequenceOfThreeEventsIsDefined() {
        for a in Event.allCases {
            for b in Event.allCases {
                for c in Event.allCases {
                    var state = GrowingFileState<Int>()
                    var ended = false
                    for event in [a, b, c] {
                        let before = state.phase
                        self.apply(event, to: &state)
                        if ended { #expect(state.phase == before, "\(a) \(b) \(c): an ended file does not change") }
                        if case .writing(_, let old) = before, case .writing(_, let new) = state.phase { #expect(new >= old, "a growing file never shrinks") }
                        if case .complete = state.phase { ended = true }
                        if case .failed = state.phase { ended = true }
                    }
                }
            }
        }
    }

    /// The crash of the issue: a cancel failed the file before the runner began it.
    @Test func beginAfterAFailIsIgnored() {
        var state = GrowingFileState<Int>()
        _ = state.wait(beyond: 0, waiter: 1)
        #expect(state.fail(.cancelled()) == [1])
        #expect(state.begin(path: "/late").isEmpty)
        #expect(state.phase == .failed(.cancelled()))
    }
}

struct CacheLedgerTests {
    let a = PublishedFile(path: "/objects/a.csv", size: 100, sha256: "a")

    @Test func partialBytesCountUntilPublishedOrDiscarded() {
        var ledger = CacheLedger()
        let producer = UUID()
        let fits = ledger.reserve(60, for: producer, limit: 100)
        let over = ledger.reserve(50, for: producer, limit: 100)
        #expect(fits)
        #expect(!over, "over the limit")
        #expect(ledger.totalBytes == 60)
        ledger.endPartial(producer)
        ledger.hold(self.a)
        #expect(ledger.totalBytes == 100)
        ledger.endPartial(producer)
        #expect(ledger.totalBytes == 100, "ending twice changes nothing")
    }

    @Test func aFileGoesWithItsLastHolder() {
        var ledger = CacheLedger()
        ledger.hold(self.a)
        ledger.hold(self.a)
        #expect(ledger.totalBytes == 100, "the same name counts once")
        let first = ledger.release(self.a.path)
        let last = ledger.release(self.a.path)
        #expect(!first)
        #expect(last)
        #expect(!ledger.isHeld(self.a.path))
        #expect(ledger.totalBytes == 0)
        let again = ledger.release(self.a.path)
        #expect(!again, "releasing what is not there changes nothing")
    }

    @Test func aDeletedFileCountsUntilItsLastReaderCloses() {
        var ledger = CacheLedger()
        ledger.hold(self.a)
        let first = ledger.open(self.a.path)
        let second = ledger.open(self.a.path)
        let gone = ledger.release(self.a.path)
        #expect(gone)
        #expect(ledger.totalBytes == 100 && ledger.detachedBytes == 100)
        // Published again under the same name (a new file) while the old is open.
        ledger.hold(self.a)
        #expect(ledger.totalBytes == 200)
        if let first { ledger.close(first) }
        #expect(ledger.totalBytes == 200)
        if let second { ledger.close(second) }
        #expect(ledger.totalBytes == 100, "the old file's bytes are free once its readers closed it")
        let none = ledger.open("/objects/none.csv")
        #expect(none == nil)
    }
}

struct ReadBufferPoolTests {
    @Test func chunkSizesShareTheBudget() {
        let pool = ReadBufferPool(limit: 4 << 20)
        #expect(pool.chunkSize(preferred: 512 << 10) == 512 << 10)
        let leases = (0..<64).map { _ in pool.lease() }
        #expect(pool.chunkSize(preferred: 512 << 10) == 64 << 10, "4 MiB / (2 × 64) = 32 KiB, so the smallest class")
        _ = leases
    }

    @Test(.timeLimit(.minutes(1)))
    func buffersComeBackWhenTheirLastReferenceGoes() async throws {
        let pool = ReadBufferPool(limit: 256 << 10)
        var first: ByteBuffer? = try await pool.buffer(size: 128 << 10)
        var second: ByteBuffer? = try await pool.buffer(size: 128 << 10)
        #expect(pool.bytesInUse == 256 << 10)
        // A copy held elsewhere (as a connection holds a chunk it has not sent).
        let held = second
        let third = Task { try await pool.buffer(size: 128 << 10) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(pool.waiting == 1, "the budget is spent: the third waits")
        second = nil
        try await Task.sleep(for: .milliseconds(20))
        #expect(pool.waiting == 1, "still held by its other reference")
        _ = held
        first = nil
        var got = try await third.value
        got.writeString("fills in place")
        #expect(pool.bytesInUse == 256 << 10)
        _ = (first, second)
    }

    /// Kept blocks follow the sizes in use: once the kept 256 KiB blocks of
    /// live downloads fill the keep limit, a 512 KiB block given back still
    /// takes a place (older sizes let go), so the next 512 KiB chunk is not
    /// fresh memory (each was an mmap and 128 page faults).
    @Test func keptBlocksFollowTheSizesInUse() async throws {
        let pool = ReadBufferPool(limit: 16 << 20)
        var small: [ByteBuffer] = []
        for _ in 0..<8 { small.append(try await pool.buffer(size: 256 << 10)) }
        small.removeAll()
        #expect(pool.bytesKept == 2 << 20, "the keep limit, in 256 KiB blocks")
        var large: ByteBuffer? = try await pool.buffer(size: 512 << 10)
        large = nil
        #expect(pool.bytesKept == 2 << 20)
        // Both 512 KiB blocks come from what was kept: no fresh memory when the pool keeps one.
        let again = try await pool.buffer(size: 512 << 10)
        #expect(pool.bytesKept == (2 << 20) - (512 << 10), "the 512 KiB block kept earlier was taken")
        _ = (large, again)
    }

    @Test(.timeLimit(.minutes(1)))
    func aWaitingReaderCanBeCancelled() async throws {
        let pool = ReadBufferPool(limit: 128 << 10)
        let all = try await pool.buffer(size: 128 << 10)
        let waiting = Task { try await pool.buffer(size: 64 << 10) }
        try await Task.sleep(for: .milliseconds(30))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(pool.waiting == 0)
        _ = all
    }

    @Test(.timeLimit(.minutes(1)))
    func manyReadersStayWithinTheBudget() async throws {
        let store = ContentStore(root: NSTemporaryDirectory() + "pool-\(UUID().uuidString)")
        try store.prepare()
        let writer = try store.createWriter(suffix: ".csv")
        let bytes = [UInt8]((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try bytes.withUnsafeBytes { try writer.write($0) }
        let file = GrowingFile(completed: try writer.publish())
        let pool = ReadBufferPool(limit: 1 << 20)
        let peak = ManagedAtomicMax()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    // A "socket" of its own frees each chunk a little later, as a
                    // connection does once it has sent it: the reader does not wait for it.
                    let (socket, send) = AsyncStream<ByteBuffer>.makeStream()
                    let sender = Task {
                        for await chunk in socket {
                            try? await Task.sleep(for: .milliseconds(1))
                            _ = chunk
                        }
                    }
                    let lease = pool.lease()
                    let reader = GrowingFileReader(file: file, chunkSize: 512 << 10, threadPool: .singleton, buffers: lease)
                    var got = 0
                    while let chunk = try await reader.next() {
                        got += chunk.readableBytes
                        peak.observe(pool.bytesInUse)
                        send.yield(chunk)
                    }
                    send.finish()
                    await sender.value
                    #expect(got == bytes.count)
                }
            }
            try await group.waitForAll()
        }
        #expect(peak.value <= 1 << 20, "peak \(peak.value) within the budget")
        #expect(pool.bytesInUse == 0)
    }
}

/// The largest value seen, from many tasks.
final class ManagedAtomicMax: @unchecked Sendable {
    private let lock = NSLock()
    private var maximum = 0
    func observe(_ value: Int) { self.lock.withLock { self.maximum = max(self.maximum, value) } }
    var value: Int { self.lock.withLock { self.maximum } }
}

struct ReaderWaitTests {
    /// Between the rename that publishes a file and the event that says so,
    /// the partial path is gone: the reader waits for the event instead of
    /// trying again and again (each try asks its buffer source for a buffer,
    /// so the source counts the tries).
    @Test(.timeLimit(.minutes(1)))
    func aReaderThatFindsNoFileWaitsWithoutSpinning() async throws {
        let store = ContentStore(root: NSTemporaryDirectory() + "wait-\(UUID().uuidString)")
        try store.prepare()
        let writer = try store.createWriter(suffix: ".csv")
        try Array("abc\n".utf8).withUnsafeBytes { try writer.write($0) }
        let file = GrowingFile()
        file.begin(path: writer.partialPath)
        file.append(length: 4)
        let sealed = try writer.seal()
        let published = try store.install(sealed)  // the partial path is gone, the file not yet complete
        let tries = CountingBuffers()
        let read = Task {
            let reader = GrowingFileReader(file: file, threadPool: .singleton, buffers: tries)
            var got: [UInt8] = []
            while let chunk = try await reader.next() { got += chunk.readableBytesView }
            return got
        }
        try await Task.sleep(for: .milliseconds(300))
        let triesWhileWaiting = tries.count
        file.complete(published)
        #expect(try await read.value == Array("abc\n".utf8))
        #expect(triesWhileWaiting <= 1, "tries while the file was missing: \(triesWhileWaiting)")
    }

}

/// Fresh buffers, counted.
final class CountingBuffers: ReadBufferSource, @unchecked Sendable {
    private let lock = NSLock()
    private var calls = 0
    var count: Int { self.lock.withLock { self.calls } }

    func buffer(preferred: Int) async throws -> ByteBuffer {
        self.lock.withLock { self.calls += 1 }
        return ByteBufferAllocator().buffer(capacity: preferred)
    }
}
