@_spi(CustomByteBufferAllocator) import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One budget of bytes for the read buffers of every download, so that memory
/// stays bounded however many clients read and however slowly.
///
/// A reader asks for a buffer before each read and waits, first come first
/// served (`AsyncBudget`), while the budget is spent. A buffer goes back to the budget the
/// moment its last reference goes: not when the reader is done with it, but
/// when the connection has sent it, because the pool allocates the buffer's
/// memory itself (NIO's custom-allocator hooks) and hears of the free. So a
/// slow client that holds chunks in its socket's queue holds them against the
/// budget, and no one has to poll to find out when they are sent.
///
/// Chunks come in a few sizes (64 KiB to 1 MiB). A lone fast download gets
/// the largest; as more readers share the budget each gets a smaller share
/// (`chunkSize(preferred:)`), so many slow downloads take turns rather than
/// starve. Freed blocks are kept for reuse up to a small cap (reusing mapped
/// memory saves a page fault per 4 KiB), and the rest go back to the system.
public final class ReadBufferPool: Sendable {
    /// The chunk sizes handed out, smallest first. All are at least glibc's
    /// mmap threshold as `MemoryTuning` sets it (64 KiB), so a block that is
    /// freed goes back to the system at once.
    public static let sizeClasses = [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20]

    /// Bytes of buffers that may exist at once.
    public var limit: Int { self.budget.limit }
    /// Bytes of buffers handed out and not yet freed (by us or by NIO).
    private let budget: AsyncBudget
    /// Bytes of freed blocks kept for reuse.
    private let keepLimit: Int

    private struct State {
        /// Freed blocks kept for reuse, by size, as addresses.
        var kept: [Int: [UInt]] = [:]
        var keptBytes = 0
        /// Readers that share the budget now (see `lease()`).
        var readers = 0
    }

    private let state = Mutex(State())

    /// - Parameter limit: the budget in bytes; at least twice the smallest chunk.
    public init(limit: Int) {
        self.budget = AsyncBudget(limit: max(limit, 2 * Self.sizeClasses[0]))
        self.keepLimit = min(self.budget.limit / 8, 2 << 20)
    }

    deinit {
        // Every buffer handed out holds the pool, so only kept blocks are left.
        self.state.withLock { state in
            for address in state.kept.values.joined() {
                free(UnsafeMutableRawPointer(bitPattern: address))
            }
        }
    }

    /// A handle for one download: while it lives, the reader counts in the
    /// fair share of the budget.
    public func lease() -> ReadBufferLease { ReadBufferLease(pool: self) }

    /// Bytes of buffers that exist now (handed out, not yet freed).
    public var bytesInUse: Int { self.budget.inUse }
    /// Bytes of freed blocks kept for reuse.
    public var bytesKept: Int { self.state.withLock { $0.keptBytes } }
    /// Readers waiting for room in the budget.
    public var waiting: Int { self.budget.waiting }

    /// The chunk size for a reader that would like `preferred` bytes: the
    /// largest size class within both `preferred` and a fair share of the
    /// budget (half of it per reader, so each can have one chunk in the
    /// connection and one being read), never below the smallest class.
    public func chunkSize(preferred: Int) -> Int {
        let readers = self.state.withLock { max(1, $0.readers) }
        let share = self.limit / (2 * readers)
        // Never larger than what may be kept: a size that is never kept is
        // fresh memory (an mmap and its page faults) for every chunk.
        let cap = min(preferred, share, self.keepLimit)
        return Self.sizeClasses.last(where: { $0 <= cap }) ?? Self.sizeClasses[0]
    }

    /// A buffer of `size` bytes (a size class), once the budget has room for
    /// it. Throws `CancellationError` if the waiting task is cancelled.
    public func buffer(size requested: Int) async throws -> ByteBuffer {
        let size = Self.sizeClasses.first(where: { $0 >= requested }) ?? Self.sizeClasses[Self.sizeClasses.count - 1]
        try await self.budget.acquire(size)
        return try self.makeBuffer(size: size)
    }

    /// Turns a granted reservation into a buffer, from a kept block or fresh memory.
    private func makeBuffer(size: Int) throws -> ByteBuffer {
        let kept = self.state.withLock { state -> UInt? in
            guard let address = state.kept[size]?.popLast() else { return nil }
            state.keptBytes -= size
            return address
        }
        let block: UnsafeMutableRawPointer
        if let kept, let pointer = UnsafeMutableRawPointer(bitPattern: kept) {
            block = pointer
        } else if let fresh = malloc(BlockHeader.size + size) {
            block = fresh
        } else {
            self.giveBack(size: size, block: nil)
            throw CacheError.failed("out of memory for a \(size)-byte read buffer")
        }
        // The block holds the pool until it is freed, so the free hook can find it.
        BlockHeader.write(to: block, capacity: size, pool: Unmanaged.passRetained(self).toOpaque())
        let payload = UnsafeMutableRawBufferPointer(start: block + BlockHeader.size, count: size)
        return ByteBuffer(takingOwnershipOf: payload, allocator: Self.allocator, readerIndex: 0, writerIndex: 0)
    }

    /// A block's last reference went (called by the free hook, on any thread):
    /// keep it or free it, and let waiting readers in.
    fileprivate func giveBack(size: Int, block: UnsafeMutableRawPointer?) {
        let address = block.map { UInt(bitPattern: $0) }
        let (kept, evicted) = self.state.withLock { state -> (Bool, [UInt]) in
            guard let address, size <= self.keepLimit else { return (false, []) }
            // Kept blocks of other sizes make room: the sizes in use now are
            // the ones worth keeping. Without this, live downloads (256 KiB
            // chunks) filled the kept blocks, and every 512 KiB chunk of a
            // later download of a finished file was a fresh mmap: 324,000
            // page faults and 1.1 s instead of 0.45 s for the 1.3 GB file.
            var evicted: [UInt] = []
            while state.keptBytes + size > self.keepLimit,
                let other = state.kept.first(where: { $0.key != size && !$0.value.isEmpty })?.key,
                let victim = state.kept[other]?.popLast()
            {
                state.keptBytes -= other
                evicted.append(victim)
            }
            guard state.keptBytes + size <= self.keepLimit else { return (false, evicted) }
            state.kept[size, default: []].append(address)
            state.keptBytes += size
            return (true, evicted)
        }
        for victim in evicted { free(UnsafeMutableRawPointer(bitPattern: victim)) }
        if !kept, let block { free(block) }
        self.budget.release(size)
    }

    fileprivate func readerJoined() { self.state.withLock { $0.readers += 1 } }
    fileprivate func readerLeft() { self.state.withLock { $0.readers -= 1 } }

    /// The allocator of every pool buffer. Its hooks are C functions and know
    /// no pool, so a block carries its pool's address in a header before the
    /// bytes. NIO calls `allocate` and `reallocate` only if it had to copy or
    /// grow one of these buffers (the readers never do): such blocks are
    /// plain memory outside any budget.
    static let allocator = ByteBufferAllocator(
        allocate: { size in
            guard let block = malloc(BlockHeader.size + size) else { return nil }
            BlockHeader.write(to: block, capacity: size, pool: nil)
            return block + BlockHeader.size
        },
        reallocate: { pointer, oldSize, newSize in
            guard let block = malloc(BlockHeader.size + newSize) else { return nil }
            BlockHeader.write(to: block, capacity: newSize, pool: nil)
            if let pointer {
                (block + BlockHeader.size).copyMemory(from: pointer, byteCount: min(oldSize, newSize))
                ReadBufferPool.release(pointer)
            }
            return block + BlockHeader.size
        },
        deallocate: { pointer in ReadBufferPool.release(pointer) },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )

    /// The free hook: gives a pool block back to its pool, frees any other.
    fileprivate static func release(_ pointer: UnsafeMutableRawPointer) {
        let block = pointer - BlockHeader.size
        let (capacity, pool) = BlockHeader.read(from: block)
        guard let pool else {
            free(block)
            return
        }
        Unmanaged<ReadBufferPool>.fromOpaque(pool).takeRetainedValue().giveBack(size: capacity, block: block)
    }
}

/// A download's share of a `ReadBufferPool`: buffers sized by the fair share
/// while it lives. One per response, used by one task.
public final class ReadBufferLease: ReadBufferSource {
    private let pool: ReadBufferPool
    /// Set once the client has shown itself slower than the reads: it then
    /// gets the smallest chunks, so it holds little of the budget in its
    /// socket's queue and each chunk it takes counts as progress soon.
    public var clientIsSlow = false

    fileprivate init(pool: ReadBufferPool) {
        self.pool = pool
        pool.readerJoined()
    }

    deinit { self.pool.readerLeft() }

    public func buffer(preferred: Int) async throws -> ByteBuffer {
        let size = self.clientIsSlow ? ReadBufferPool.sizeClasses[0] : self.pool.chunkSize(preferred: preferred)
        return try await self.pool.buffer(size: size)
    }
}

/// The 64 bytes before a pool buffer's bytes: its capacity and its pool (or
/// none). 64 keeps the bytes as aligned as `malloc` made the block.
private enum BlockHeader {
    static let size = 64

    static func write(to block: UnsafeMutableRawPointer, capacity: Int, pool: UnsafeMutableRawPointer?) {
        block.storeBytes(of: UInt64(capacity), toByteOffset: 0, as: UInt64.self)
        block.storeBytes(of: UInt(bitPattern: pool), toByteOffset: 8, as: UInt.self)
    }

    static func read(from block: UnsafeMutableRawPointer) -> (capacity: Int, pool: UnsafeMutableRawPointer?) {
        let capacity = Int(block.load(fromByteOffset: 0, as: UInt64.self))
        let pool = UnsafeMutableRawPointer(bitPattern: block.load(fromByteOffset: 8, as: UInt.self))
        return (capacity, pool)
    }
}
