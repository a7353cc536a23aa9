import Foundation
import Synchronization

/// Lines to stderr (progress, errors, the summary), one write each so lines
/// from concurrent tasks never interleave.
enum Console {
    private static let lock = Mutex(())

    static func line(_ text: String) {
        let data = Data((text + "\n").utf8)
        self.lock.withLock { _ in FileHandle.standardError.write(data) }
    }
}
