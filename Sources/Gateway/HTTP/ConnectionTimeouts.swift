/// When a client connection must be closed for taking too long, as a pure
/// state machine: events go in, the deadline (or none) comes out.
///
///     connect ──▶ awaitingHead(now + header) ──head──▶ busy ──response end──▶ idle(now + keep-alive)
///                        ▲                                                          │
///                        └──────────────── first byte of the next request ──────────┘
///
/// - A request head must arrive whole within `header` of the connection or
///   of its first byte: a client that sends half a request and stalls
///   (slowloris) is closed then, whatever it trickles meanwhile.
/// - While a request is handled there is no deadline: a slow download is
///   paced by the client's reading, and its writes are bounded elsewhere.
/// - Between requests, an idle connection lives `keepAlive`.
/// - Bytes that arrived while a request was handled may be the start of the
///   next one (or the rest of a body nothing reads): after that response,
///   the header deadline applies to them.
struct ConnectionTimeouts<Instant: Comparable> {
    enum Phase: Equatable {
        case awaitingHead(deadline: Instant)
        case busy
        case idle(deadline: Instant)
    }

    let header: (Instant) -> Instant
    let keepAlive: (Instant) -> Instant
    private(set) var phase: Phase
    /// Requests whose head arrived and whose response has not ended.
    private var inFlight = 0
    /// Bytes arrived since the last head.
    private var bytesSinceHead = false

    /// - Parameters:
    ///   - header: the deadline for a head that starts at the given instant.
    ///   - keepAlive: the deadline for an idle connection from the given instant.
    init(connectedAt now: Instant, header: @escaping (Instant) -> Instant, keepAlive: @escaping (Instant) -> Instant) {
        self.header = header
        self.keepAlive = keepAlive
        self.phase = .awaitingHead(deadline: header(now))
    }

    /// The deadline now in force, if any.
    var deadline: Instant? {
        switch self.phase {
        case .awaitingHead(let deadline), .idle(let deadline): deadline
        case .busy: nil
        }
    }

    mutating func bytesReceived(at now: Instant) {
        self.bytesSinceHead = true
        if case .idle = self.phase { self.phase = .awaitingHead(deadline: self.header(now)) }
    }

    mutating func headReceived() {
        self.inFlight += 1
        self.bytesSinceHead = false
        self.phase = .busy
    }

    mutating func responseEnded(at now: Instant) {
        self.inFlight = max(0, self.inFlight - 1)
        guard self.inFlight == 0 else { return }
        self.phase = self.bytesSinceHead ? .awaitingHead(deadline: self.header(now)) : .idle(deadline: self.keepAlive(now))
    }

    /// True when the connection must close at `now`.
    func isExpired(at now: Instant) -> Bool {
        guard let deadline = self.deadline else { return false }
        return now >= deadline
    }
}
