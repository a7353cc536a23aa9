import Dispatch
import Foundation

/// The first Ctrl-C (SIGINT) or SIGTERM ends the run early but still writes
/// its results; a second one ends the process as usual.
enum Interrupt {
    /// Returns when the first signal arrives (or the task is cancelled).
    static func wait() async {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        let sources = [SIGINT, SIGTERM].map { signo -> any DispatchSourceSignal in
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler {
                // The next one gets the default action: a second Ctrl-C stops at once.
                signal(SIGINT, SIG_DFL)
                signal(SIGTERM, SIG_DFL)
                continuation.yield(signo)
            }
            source.resume()
            return source
        }
        defer {
            sources.forEach { $0.cancel() }
            signal(SIGINT, SIG_DFL)
            signal(SIGTERM, SIG_DFL)
        }
        await withTaskCancellationHandler {
            for await signo in stream {
                Console.line("signal \(signo): stopping, writing the results (again to stop at once)")
                return
            }
        } onCancel: {
            continuation.finish()
        }
    }
}
