/// A fixed block of memory that gathers COPY rows into large writes, so the
/// file sees one `write(2)` per block rather than one per row. Owns its memory.
final class StagingBuffer {
    let capacity: Int
    private let storage: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        self.storage = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit { self.storage.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: self.storage[0..<self.count]) }
    var isEmpty: Bool { self.count == 0 }

    /// False when the bytes do not fit in what is left: flush first.
    func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= self.capacity - self.count else { return false }
        if let base = bytes.baseAddress {
            (self.storage.baseAddress! + self.count).copyMemory(from: base, byteCount: bytes.count)
        }
        self.count += bytes.count
        return true
    }

    func removeAll() { self.count = 0 }
}
