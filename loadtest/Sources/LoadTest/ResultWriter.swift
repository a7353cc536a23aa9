import Foundation

/// Writes result.json and report.html into `--out`.
struct ResultWriter {
    let directory: String

    /// The folder written, or nil (after saying why) when it could not be.
    func write(_ result: RunResult) -> String? {
        do {
            try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(result).write(to: URL(fileURLWithPath: self.directory + "/result.json"), options: .atomic)
            try Data(HTMLReport(result: result).render().utf8).write(to: URL(fileURLWithPath: self.directory + "/report.html"), options: .atomic)
            return self.directory
        } catch {
            Console.line("could not write the results into \(self.directory): \(error)")
            return nil
        }
    }
}
