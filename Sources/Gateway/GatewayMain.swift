import Dispatch
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

@main
struct GatewayMain {
    static func main() async {
        MemoryTuning.apply()
        let configuration: Configuration
        do {
            configuration = try Configuration.load()
        } catch {
            FileHandle.standardError.write(Data("gateway: \(error)\n".utf8))
            exit(2)
        }
        ResourceLimits.raiseOpenFiles()
        ResourceLimits.ignoreStraySignals()
        // stderr is unbuffered: progress lines (seeding) show at once even
        // when the output is a pipe or a file, as under Docker.
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "gateway")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        do {
            let gateway = try await buildApplication(configuration, logger: logger)
            try await Self.run(gateway, grace: .seconds(configuration.http.shutdownGraceSeconds), logger: logger)
            Self.end(0)
        } catch {
            logger.critical("gateway stopped", metadata: ["error": "\(error)", "error.details": "\(ErrorText.details(error))"])
            Self.end(1)
        }
    }

    /// Ends the process without running `atexit` handlers. The shutdown does
    /// not wait for threads that may be inside libpq (a thread-pool call, a
    /// query cancel, the cluster listener: one stuck on a vanished database
    /// host must not hold the exit), and `exit` would run libcrypto's
    /// cleanup under them: a SIGTERM test crashed that way (SIGSEGV in
    /// libcrypto on a pool thread while the main thread was in `_dl_fini`,
    /// about 1 exit in 60 under load). Nothing is left to flush: every
    /// acknowledgement is in the journal, every file synced, and the log
    /// goes to unbuffered stderr.
    static func end(_ status: Int32) -> Never {
        _exit(status)
    }

    /// Serves until SIGTERM or SIGINT, then shuts down:
    ///
    /// 1. at once, the manager interrupts queued and running exports (their
    ///    live downloads end as aborted transfers; the journal keeps them
    ///    queued for the next start) and refuses new ones (503);
    /// 2. the server stops accepting and closes idle connections; downloads
    ///    of finished files go on, for at most `grace`;
    /// 3. then whatever is left is cancelled, and the process exits 0.
    ///
    /// A second signal exits at once (128 + the signal's number): nothing is
    /// lost by it, since the journal and the cache are crash-safe. And if the
    /// cancellation itself does not end within 10 s (a thread stuck in a call
    /// to a database host that vanished), the process exits 0 anyway: no
    /// `maximumCancellationDuration`, which would end it with a `fatalError`.
    static func run<App: ApplicationProtocol>(_ gateway: Gateway<App>, grace: Duration, logger: Logger) async throws {
        var groupConfiguration = ServiceGroupConfiguration(services: [gateway.application], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = grace
        let group = ServiceGroup(configuration: groupConfiguration)
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                var shuttingDown = false
                for await signal in signals {
                    if shuttingDown {
                        logger.warning("second signal: exiting now", metadata: [LogKey.signal: "\(signal)"])
                        _exit(128 + signal.rawValue)
                    }
                    shuttingDown = true
                    logger.notice("shutting down", metadata: [LogKey.signal: "\(signal)", LogKey.shutdownGraceSeconds: "\(grace.components.seconds)"])
                    gateway.manager.beginShutdown()
                    await group.triggerGracefulShutdown()
                    // When the grace runs out, closes stop waiting for unsent bytes
                    // (the group cancels the connections then).
                    let connections = gateway.connections
                    DispatchQueue.global().asyncAfter(deadline: .now() + Double(grace.components.seconds)) {
                        connections.cutPendingBytes()
                    }
                    // The way out if the shutdown overruns; a clean end exits before it fires.
                    let overrun = Double(grace.components.seconds) + 10
                    DispatchQueue.global().asyncAfter(deadline: .now() + overrun) {
                        logger.warning("shutdown overran its grace by 10 s; exiting")
                        _exit(0)
                    }
                }
            }
            try await group.run()
            // The group has ended; so does the signal watcher (the signals'
            // stream ends when its task is cancelled).
            tasks.cancelAll()
        }
    }
}
