import Foundation

/// One HTTP exchange made by the real `curl`: its exit code, the status and
/// headers of the final response, and the body as received.
struct CurlResult: Sendable {
    let exitCode: Int32
    let status: Int
    /// Header names lower-cased.
    let headers: [String: String]
    let body: Data

    var json: [String: Any] {
        ((try? JSONSerialization.jsonObject(with: self.body)) as? [String: Any]) ?? [:]
    }
}

/// A curl run in the background (a live download), whose result is read later.
struct CurlTransfer: Sendable {
    let process: RunningProcess
    let headerPath: String
    let bodyPath: String

    /// True once the response head has arrived.
    var hasHeaders: Bool {
        ((try? String(contentsOfFile: self.headerPath, encoding: .utf8)) ?? "").contains("\r\n\r\n")
    }

    var bytesReceived: Int {
        ((try? FileManager.default.attributesOfItem(atPath: self.bodyPath))?[.size] as? Int) ?? 0
    }

    func wait() async -> CurlResult {
        let result = await self.process.wait()
        let headerText = (try? String(contentsOfFile: self.headerPath, encoding: .utf8)) ?? ""
        let body = (try? Data(contentsOf: URL(fileURLWithPath: self.bodyPath))) ?? Data()
        try? FileManager.default.removeItem(atPath: self.headerPath)
        try? FileManager.default.removeItem(atPath: self.bodyPath)
        // The last block is the final response (after any 1xx).
        let block = headerText.components(separatedBy: "\r\n\r\n").filter { !$0.isEmpty }.last ?? ""
        var lines = block.components(separatedBy: "\r\n")
        let statusLine = lines.isEmpty ? "" : lines.removeFirst()
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return CurlResult(exitCode: result.status, status: status, headers: headers, body: body)
    }
}

func startCurl(_ url: String, method: String = "GET", _ options: [String] = [], bodyPath: String? = nil) throws -> CurlTransfer {
    let base = NSTemporaryDirectory() + "curl-\(UUID().uuidString)"
    let headerPath = base + ".headers"
    let body = bodyPath ?? base + ".body"
    let arguments = ["-s", "-S", "-X", method, "-D", headerPath, "-o", body, "--max-time", "120"] + options + [url]
    return CurlTransfer(process: try RunningProcess("curl", arguments), headerPath: headerPath, bodyPath: body)
}

func curl(_ url: String, method: String = "GET", _ options: [String] = []) async throws -> CurlResult {
    try await startCurl(url, method: method, options).wait()
}
