/// Whether a client's `Accept-Encoding` prefers gzip to the identity
/// encoding, with q-values, `*` and `identity` read as RFC 9110 §12.5.3 says.
enum AcceptEncoding {
    static func prefersGzip(_ header: String?) -> Bool {
        guard let header else { return false }
        var gzip: Double?
        var identity: Double?
        var wildcard: Double?
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingSpaces().lowercased() }
            guard let coding = parts.first, !coding.isEmpty else { continue }
            var q = 1.0
            for parameter in parts.dropFirst() where parameter.hasPrefix("q=") {
                q = Double(parameter.dropFirst(2)).map { min(1, max(0, $0)) } ?? 0
            }
            switch coding {
            case "gzip", "x-gzip": gzip = max(gzip ?? 0, q)
            case "identity": identity = q
            case "*": wildcard = q
            default: break
            }
        }
        let gzipQ = gzip ?? wildcard ?? 0
        let identityQ = identity ?? 1
        return gzipQ > 0 && gzipQ >= identityQ
    }
}
