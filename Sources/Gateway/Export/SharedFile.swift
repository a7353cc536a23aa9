import Cache
import Foundation
import Synchronization

/// One file that several exports share (coalesced requests), seen by each
/// through a view of its own.
///
/// The producer reports to the shared file, which passes every event on to
/// each view. An export that is cancelled is detached: its view fails, so its
/// own live readers see an aborted transfer, while the other exports' readers
/// go on. A view made late first catches up with what was already written.
final class SharedFile: Sendable {
    /// The file as its producer writes it; followers of the whole run (the
    /// gzip producer) read this one.
    let primary = GrowingFile()
    /// Guards the views; events are passed on under it, so a view made while
    /// an event is under way misses nothing and sees nothing twice.
    private let views = Mutex<[UUID: GrowingFile]>([:])

    func begin(path: String) { self.forward { $0.begin(path: path) } }
    func append(length: Int) { self.forward { $0.append(length: length) } }
    func complete(_ file: PublishedFile) { self.forward { $0.complete(file) } }
    func fail(_ error: CacheError) { self.forward { $0.fail(error) } }

    /// The view of export `id`, made on first use.
    func view(for id: UUID) -> GrowingFile {
        self.views.withLock { views in
            if let view = views[id] { return view }
            let view = GrowingFile()
            self.primary.copyPhase(to: view)
            views[id] = view
            return view
        }
    }

    /// Ends export `id`'s view with `error`; the shared file goes on.
    func detach(_ id: UUID, with error: CacheError) {
        self.views.withLock { $0.removeValue(forKey: id) }?.fail(error)
    }

    private func forward(_ event: (GrowingFile) -> Void) {
        self.views.withLock { views in
            event(self.primary)
            for view in views.values { event(view) }
        }
    }
}
