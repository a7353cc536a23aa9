import Foundation
import Hummingbird
import Logging

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
        // stderr is unbuffered: progress lines (seeding) show at once even
        // when the output is a pipe or a file, as under Docker.
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "gateway")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
        do {
            let app = try await buildApplication(configuration, logger: logger)
            try await app.runService()
        } catch {
            logger.critical("gateway stopped", metadata: ["error": "\(error)", "error.details": "\(errorDetails(error))"])
            exit(1)
        }
    }
}

/// What an error can say for the log beyond its client-safe description.
func errorDetails(_ error: any Error) -> String {
    switch error {
    case let error as PostgresError: error.details
    default: "\(error)"
    }
}
