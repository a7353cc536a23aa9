import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization

/// Hummingbird's HTTP/1.1 child channel with the bounds a public server
/// needs around it, set up per connection:
///
/// - **Connections**: past `maxConnections` open at once, a new connection's
///   requests are answered `503` with `Retry-After` and the connection closed,
///   except `GET /health`, which is still served (an operator can see why);
///   past twice that, the server stops accepting and connections wait in the
///   listen backlog (`availableConnections`).
/// - **Time**: `ConnectionTimeouts`: a request head must arrive within
///   REQUEST_HEADER_TIMEOUT of its first byte (slowloris), an idle kept-alive
///   connection lives KEEP_ALIVE_TIMEOUT.
/// - **Size**: a request head (request line and headers) of more than
///   MAX_HEADER_BYTES, or more than 100 header fields, is answered `431` and
///   the connection closed.
/// - **Sending**: a response whose client takes nothing for SEND_TIMEOUT
///   (no chunk written to its socket while chunks wait, and no data sent
///   by the kernel) is cut, and only such a one: a client that keeps
///   taking bytes, however slowly, keeps its connection however many
///   others download. Memory is bounded elsewhere: the download memory
///   budget (`ReadBufferPool`) makes readers wait for room (the disk reads
///   slow down) and shrinks their chunks as more share it. (A shorter
///   timeout while readers waited for that budget cut 14 of 100 healthy
///   1 MB/s clients of one file within 15 s: `curl --limit-rate` reads in
///   bursts and sleeps between them, so its window stays shut for seconds
///   at a time.) The transfer ends aborted, never short and looking complete.
///
/// The rest is Hummingbird's own pipeline: NIO's HTTP/1 codec, the HTTPTypes
/// codec, its connection-state handler (which closes idle connections when
/// the server shuts down) and its request loop (`handleHTTP`).
struct GatewayHTTPServer: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    struct Limits: Sendable {
        var maxConnections = 1024
        var headerTimeout: TimeAmount = .seconds(10)
        var keepAliveTimeout: TimeAmount = .seconds(15)
        var maxHeaderBytes = 16 * 1024
        var maxHeaderFields = 100
        /// No chunk sent for this long while some wait: the response is cut.
        var sendTimeout: TimeAmount = .seconds(60)
    }

    let responder: HTTPChannelHandler.Responder
    let limits: Limits
    let connections: ConnectionCounter

    /// The server builder for `Application(server:)`.
    static func builder(limits: Limits, connections: ConnectionCounter) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in GatewayHTTPServer(responder: responder, limits: limits, connections: connections) }
    }

    /// Stops accepting past twice the connection limit (the backlog holds the rest).
    static func availableConnections(_ limits: Limits, logger: Logger) -> MaximumAvailableConnections {
        MaximumAvailableConnections(2 * limits.maxConnections, logger: logger)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let overLimit = self.connections.opened() > self.limits.maxConnections
            let counter = self.connections
            channel.closeFuture.whenComplete { _ in counter.closed() }
            let guardian = ConnectionGuard(channel: channel, limits: self.limits, overLimit: overLimit, connections: counter, logger: logger)
            var decoderLimits = NIOHTTPDecoderLimitConfiguration()
            decoderLimits.maxHeaderFieldSize = self.limits.maxHeaderBytes
            decoderLimits.maxHeaderListSize = self.limits.maxHeaderBytes
            decoderLimits.maxHeaderFieldCount = self.limits.maxHeaderFields
            let pipeline = channel.pipeline.syncOperations
            try pipeline.addHandler(BytesWatcher(guardian))
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false,  // requests are taken one at a time by handleHTTP
                withErrorHandling: false,  // parse errors: RequestGuard (431) or Hummingbird (400)
                withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(),
                withDecoderLimitConfiguration: decoderLimits
            )
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            try pipeline.addHandler(RequestGuard(guardian))
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: nil, logger: logger))
            return try Self.wrap(channel)
        }
    }

    /// Wraps the connection so that the server's request loop can take it.
    /// A connection accepted just as the server stops may never be taken:
    /// NIO's current wrapper (`wrappingChannelSynchronously`, which
    /// Hummingbird uses) traps when such a wrapper is dropped ("Deinited
    /// NIOAsyncWriter without calling finish()", seen here when a shutdown
    /// came under load), so this uses the older one, which closes the
    /// connection instead. Its deprecation warning is the price.
    private static func wrap(_ channel: any Channel) throws -> Value {
        try NIOAsyncChannel(synchronouslyWrapping: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
    }

    func handle(value asyncChannel: Value, logger: Logger) async {
        await self.handleHTTP(asyncChannel: asyncChannel, logger: logger)
    }
}

/// Open client connections, across event loops, and whether closes must
/// no longer wait for pending bytes (the shutdown's grace has run out).
final class ConnectionCounter: Sendable {
    private let count = Atomic<Int>(0)
    private let cutting = Atomic<Bool>(false)

    init() {}

    /// From now on a close cuts what is unsent (see `RequestGuard.close`).
    func cutPendingBytes() { self.cutting.store(true, ordering: .relaxed) }
    var cutsPendingBytes: Bool { self.cutting.load(ordering: .relaxed) }

    /// One more; returns how many are open now.
    func opened() -> Int { self.count.wrappingAdd(1, ordering: .relaxed).newValue }
    func closed() { self.count.wrappingSubtract(1, ordering: .relaxed) }
}

/// One connection's timeouts and limits; its two handlers report to it.
/// Lives on the connection's event loop: every call comes from there.
private final class ConnectionGuard {
    private weak var channel: (any Channel)?
    private let eventLoop: any EventLoop
    private let limits: GatewayHTTPServer.Limits
    private let connections: ConnectionCounter
    private let logger: Logger
    /// Opened past MAX_CONNECTIONS: every request but a health check gets 503.
    let overLimit: Bool
    private var timeouts: ConnectionTimeouts<NIODeadline>
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// Response parts handed to the socket and not yet written out.
    private var pendingWrites = 0
    /// Set while the guard itself closes the connection (a timeout): such a
    /// close is not put off until the pending bytes are written.
    private var forcedHere = false
    /// True when a close must not wait for pending bytes: the guard's own
    /// (a timeout), or any once the shutdown's grace has run out.
    var forcing: Bool { self.forcedHere || self.connections.cutsPendingBytes }

    var hasPendingWrites: Bool { self.pendingWrites > 0 }
    /// When a chunk was last written out (or the first began to wait).
    private var lastProgress = NIODeadline.now()
    private var sendTimer: Scheduled<Void>?

    init(channel: any Channel, limits: GatewayHTTPServer.Limits, overLimit: Bool, connections: ConnectionCounter, logger: Logger) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.limits = limits
        self.connections = connections
        self.overLimit = overLimit
        self.logger = logger
        let (header, keepAlive) = (limits.headerTimeout, limits.keepAliveTimeout)
        self.timeouts = ConnectionTimeouts(connectedAt: .now(), header: { $0 + header }, keepAlive: { $0 + keepAlive })
        self.rearm()
    }

    func bytesReceived() {
        self.timeouts.bytesReceived(at: .now())
        self.rearm()
    }

    func headReceived() {
        self.timeouts.headReceived()
        self.rearm()
    }

    func responseEnded() {
        self.timeouts.responseEnded(at: .now())
        self.rearm()
    }

    func closed() {
        self.timer?.cancel()
        self.timer = nil
        self.sendTimer?.cancel()
        self.sendTimer = nil
    }

    /// A response part goes to the socket.
    func writeStarted() {
        if self.pendingWrites == 0 { self.lastProgress = .now() }
        self.pendingWrites += 1
        if self.sendTimer == nil { self.scheduleSendCheck() }
    }

    /// A response part is written out (or failed with the connection).
    func writeEnded() {
        self.pendingWrites = max(0, self.pendingWrites - 1)
        self.lastProgress = .now()
    }

    /// Closes now, whatever is still pending.
    private func forceClose() {
        self.forcedHere = true
        self.channel?.close(promise: nil)
    }

    private func scheduleSendCheck() {
        self.sendTimer = self.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [weak self] in
            self?.checkSending()
        }
    }

    /// Once a second while chunks wait: cuts a client that takes nothing.
    ///
    /// Chunks wait here only while the kernel's send buffer is full, and a
    /// chunk's write completes only once the kernel has room for it: with
    /// the several megabytes a loopback or a fast link gives that buffer, a
    /// client reading 20 KB/s completes no write for more than a minute
    /// (seen: such clients were cut as if they took nothing). So before it
    /// cuts, the check asks the kernel when it last sent the client data
    /// (`TCP_INFO`'s `tcpi_last_data_sent`): a client whose window still
    /// opens gets data, and counts as taking it. A client that reads nothing
    /// gets only zero-window probes, which carry no data.
    private func checkSending() {
        self.sendTimer = nil
        guard self.pendingWrites > 0 else { return }
        let limit = self.limits.sendTimeout
        guard NIODeadline.now() - self.lastProgress >= limit else {
            self.scheduleSendCheck()
            return
        }
        guard let socket = self.channel as? any SocketOptionProvider else {
            self.cutStalledClient()
            return
        }
        socket.getTCPInfo().hop(to: self.eventLoop).assumeIsolated().whenComplete { result in
            guard self.pendingWrites > 0 else { return }
            if case .success(let info) = result, Int64(info.tcpi_last_data_sent) < limit.nanoseconds / 1_000_000 {
                // The kernel is still sending: the client reads, slowly.
                self.lastProgress = NIODeadline.now() - .milliseconds(Int64(info.tcpi_last_data_sent))
                if self.sendTimer == nil { self.scheduleSendCheck() }
            } else {
                let lastSent = (try? result.get()).map { "\($0.tcpi_last_data_sent)" } ?? "unknown"
                self.cutStalledClient(lastDataSentMilliseconds: lastSent)
            }
        }
    }

    private func cutStalledClient(lastDataSentMilliseconds: String = "unknown") {
        self.logger.debug(
            "closing a connection whose client takes nothing",
            metadata: [
                LogKey.httpPendingChunks: "\(self.pendingWrites)", LogKey.httpLastDataSentMilliseconds: "\(lastDataSentMilliseconds)",
            ])
        self.forceClose()
    }

    /// Keeps one timer at the deadline in force.
    private func rearm() {
        let deadline = self.timeouts.deadline
        guard deadline != self.timerDeadline else { return }
        self.timer?.cancel()
        self.timer = nil
        self.timerDeadline = deadline
        guard let deadline else { return }
        self.timer = self.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.fire()
        }
    }

    private func fire() {
        self.timer = nil
        self.timerDeadline = nil
        if self.timeouts.isExpired(at: .now()) {
            self.logger.debug("closing a connection that took too long to send a request, or sat idle")
            self.forceClose()
        } else {
            self.rearm()
        }
    }
}

/// First in the pipeline: sees every byte a client sends (a request that has
/// started but not finished).
private final class BytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let guardian: ConnectionGuard

    init(_ guardian: ConnectionGuard) { self.guardian = guardian }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.guardian.bytesReceived()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.guardian.closed()
        context.fireChannelInactive()
    }
}

/// After the HTTP codecs: sees request heads and response ends, answers
/// requests past the connection limit, and oversized heads.
private final class RequestGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let guardian: ConnectionGuard
    /// A response of our own was written and the connection is closing:
    /// nothing more goes to the application.
    private var refused = false
    /// A full close waiting for pending bytes (see `close`).
    private var deferredClose: EventLoopPromise<Void>?

    init(_ guardian: ConnectionGuard) { self.guardian = guardian }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.refused else { return }
        let part = self.unwrapInboundIn(data)
        if case .head(let head) = part {
            self.guardian.headReceived()
            if self.guardian.overLimit, !(head.method == .get && head.path?.split(separator: "?").first == "/health") {
                self.refuse(
                    context: context, status: .serviceUnavailable, code: "too_many_connections",
                    message: "the server has too many open connections (MAX_CONNECTIONS); retry shortly", retryAfter: 1)
                return
            }
        }
        context.fireChannelRead(data)
    }

    /// Every response part is followed to the socket: so that a client that
    /// takes nothing is noticed, and so that a close can wait for the bytes.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = self.unwrapOutboundIn(data) { self.guardian.responseEnded() }
        self.guardian.writeStarted()
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { result in
            self.guardian.writeEnded()
            promise?.completeWith(result)
            if !self.guardian.hasPendingWrites, let deferred = self.deferredClose {
                self.deferredClose = nil
                context.close(mode: .all, promise: deferred)
            }
        }
        context.write(data, promise: written)
    }

    /// A full close while response bytes are still on their way (Hummingbird
    /// closes a connection right after writing a response's end when the
    /// server shuts down, and NIO then drops what is unsent: a slow client
    /// of a finished file got its download cut ~0.5 MB short, seen in the
    /// SIGTERM test) waits until they are written out. The guard's own
    /// closes (timeouts) do not wait.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, self.guardian.hasPendingWrites, !self.guardian.forcing else {
            context.close(mode: mode, promise: promise)
            return
        }
        let deferred = self.deferredClose ?? context.eventLoop.makePromise(of: Void.self)
        if let promise { deferred.futureResult.cascade(to: promise) }
        self.deferredClose = deferred
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parse = error as? HTTPParserError, parse == .headerOverflow {
            self.refuse(
                context: context, status: .init(code: 431, reasonPhrase: "Request Header Fields Too Large"), code: "header_too_large",
                message: "the request line and headers are too large (MAX_HEADER_BYTES) or too many", retryAfter: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    /// Answers with a JSON error of our own and closes the connection.
    private func refuse(context: ChannelHandlerContext, status: HTTPResponse.Status, code: String, message: String, retryAfter: Int?) {
        guard !self.refused else { return }
        self.refused = true
        let body = ByteBuffer(string: "{\"error\":\"\(code)\",\"message\":\"\(message)\"}\n")
        var fields: HTTPFields = [.contentType: "application/json; charset=utf-8", .contentLength: String(body.readableBytes), .connection: "close"]
        if let retryAfter { fields[.retryAfter] = String(retryAfter) }
        context.write(self.wrapOutboundOut(.head(HTTPResponse(status: status, headerFields: fields))), promise: nil)
        context.write(self.wrapOutboundOut(.body(body)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
