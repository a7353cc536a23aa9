import CLibPQ

#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection, owned by whoever made it. Every call blocks: use it on
/// a thread of its own (the export workers, a `NIOThreadPool`), never on an event
/// loop or the cooperative pool. Not thread-safe; `close()` or `deinit` frees it.
/// A call after `close()` throws. No `OpaquePointer` leaves this folder.
final class PostgresConnection {
    private var conn: OpaquePointer?
    /// How long a statement may wait for the server (`PostgresSettings.clientTimeoutMilliseconds`).
    private var clientTimeout: Duration?
    /// Asked once a second while a statement waits: true abandons it (the
    /// export worker's way to stop when its cancel could not reach the server).
    var abandonWhen: (() -> Bool)?

    /// Connects and puts the session in UTC, so timestamps come out as the CSV
    /// contract says. Every connection has a connect timeout and TCP
    /// keepalives (`PostgresSettings`), so a database host that vanishes is
    /// noticed in seconds rather than never.
    init(_ settings: PostgresSettings) throws {
        let conn = Self.connect(settings)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { Self.message(of: $0) } ?? "out of memory"
            PQfinish(conn)
            throw PostgresError.connectionFailed(message)
        }
        // Notices ("relation … already exists, skipping") would go to stderr
        // raw; they say nothing an operator needs.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        self.conn = conn
        self.clientTimeout = settings.clientTimeoutMilliseconds.map { .milliseconds($0) }
        var setup = "SET TimeZone = 'UTC'; SET client_encoding = 'UTF8'"
        if let timeout = settings.statementTimeoutMilliseconds { setup += "; SET statement_timeout = \(timeout)" }
        try self.execute(setup)
    }

    /// A connection with the default settings for `url`.
    convenience init(url: String) throws {
        try self.init(PostgresSettings(url: url))
    }

    deinit { self.close() }

    func close() {
        PQfinish(self.conn)
        self.conn = nil
    }

    /// `PQconnectdbParams` with the settings' defaults first and the URL
    /// after them, so that anything the URL sets itself wins.
    private static func connect(_ settings: PostgresSettings) -> OpaquePointer? {
        var pairs = settings.defaults
        if !settings.url.isEmpty { pairs.append(("dbname", settings.url)) }
        let keywords = pairs.map { strdup($0.0) } + [nil]
        let values = pairs.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        return keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 1)
            }
        }
    }

    private func handle() throws -> OpaquePointer {
        guard let conn = self.conn else { throw PostgresError.connectionLost("the connection was closed") }
        return conn
    }

    /// The backend's process id, for `pg_stat_activity` and `pg_terminate_backend`.
    var backendPID: Int32 { self.conn.map { PQbackendPID($0) } ?? 0 }

    /// For a connection that has been idle: false when the server has
    /// closed it or said something meanwhile (a restart or
    /// `pg_terminate_backend` sends a FATAL message and closes; a crash
    /// leaves the end of the stream). An idle connection gets nothing
    /// unasked (notices are not sent outside a statement, and nothing here
    /// listens), so anything readable means it is gone.
    var looksAlive: Bool {
        guard let conn = self.conn, PQstatus(conn) == CONNECTION_OK else { return false }
        var fds = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        var ready = poll(&fds, 1, 0)
        while ready < 0, errno == EINTR { ready = poll(&fds, 1, 0) }
        return ready == 0
    }

    /// One round trip (an empty statement) that must come back within
    /// `timeout`: false, and the connection closed, when it does not. For a
    /// kept connection whose server may have stopped answering without
    /// closing it (a frozen backend, a host gone silent).
    func ping(timeout: Duration) -> Bool {
        let saved = self.clientTimeout
        self.clientTimeout = timeout
        defer { self.clientTimeout = saved }
        do {
            try self.execute("")
            return true
        } catch {
            self.close()
            return false
        }
    }

    /// A handle that can cancel this connection's running query from another thread.
    func makeCanceller() -> PostgresCanceller? {
        self.conn.flatMap { PQgetCancel($0) }.map(PostgresCanceller.init)
    }

    /// Runs SQL (several statements allowed, no parameters) and returns the rows
    /// of the last result as text, NULL as nil.
    @discardableResult
    func execute(_ sql: String) throws -> [[String?]] {
        try self.query(sql).rows
    }

    /// `execute(_:)`, with the names of the result's columns.
    func query(_ sql: String) throws -> QueryResult {
        let conn = try self.handle()
        guard PQsendQuery(conn, sql) == 1 else { throw PostgresError.connectionLost(Self.message(of: conn)) }
        return try self.results(conn)
    }

    /// Runs one statement with text parameters bound by libpq (`$1`, `$2`, …).
    @discardableResult
    func execute(_ sql: String, parameters: [String?]) throws -> [[String?]] {
        try self.query(sql, parameters: parameters).rows
    }

    /// `execute(_:parameters:)`, with the names of the result's columns.
    func query(_ sql: String, parameters: [String?]) throws -> QueryResult {
        let conn = try self.handle()
        var cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { cStrings.forEach { free($0) } }
        let sent = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { params in
                PQsendQueryParams(conn, sql, Int32(parameters.count), nil, params.baseAddress, nil, nil, 0)
            }
        }
        guard sent == 1 else { throw PostgresError.connectionLost(Self.message(of: conn)) }
        return try self.results(conn)
    }

    /// Waits for every result of what was sent and returns the rows of the
    /// last; the first error wins. The wait is on the socket, a second at a
    /// time: past `clientTimeout`, or when `abandonWhen` says so, the
    /// statement is abandoned and the connection closed. A server that
    /// stopped answering (frozen, or cut off without a reset, which TCP
    /// keepalives do not catch while the kernel still acknowledges) cannot
    /// hold the caller longer than that; the server's own statement_timeout
    /// never fires for a server that does not run.
    private func results(_ conn: OpaquePointer) throws -> QueryResult {
        let deadline = self.clientTimeout.map { ContinuousClock.now + $0 }
        var rows = QueryResult(columns: [], rows: [])
        var failure: PostgresError?
        while true {
            while PQisBusy(conn) == 1 {
                if let deadline, ContinuousClock.now >= deadline {
                    self.close()
                    throw PostgresError.connectionLost("no answer from the server within \(self.clientTimeout.map { "\($0)" } ?? "")")
                }
                if let abandon = self.abandonWhen, abandon() {
                    self.close()
                    throw PostgresError.connectionLost("abandoned while waiting for the server")
                }
                try self.waitForInput(conn)
            }
            guard let result = PQgetResult(conn) else { break }
            defer { PQclear(result) }
            if failure == nil {
                do {
                    rows = try self.rows(of: result)
                } catch let error as PostgresError {
                    failure = error
                } catch {
                    failure = .queryFailed(sqlState: nil, "\(error)")
                }
            }
        }
        if let failure { throw failure }
        return rows
    }

    /// The rows of a statement's result as text (NULL as nil), and the
    /// names of its columns in order.
    struct QueryResult: Sendable {
        let columns: [String]
        let rows: [[String?]]
    }

    /// One `NOTIFY` received on a connection that ran `LISTEN`.
    struct Notification: Sendable, Equatable {
        let channel: String
        let payload: String
    }

    /// Waits at most `timeout` for notifications (after `LISTEN`) and returns
    /// those that came, possibly none. Throws when the connection is lost.
    func notifications(waitingAtMost timeout: Duration) throws -> [Notification] {
        let conn = try self.handle()
        var received = Self.pendingNotifications(conn)
        guard received.isEmpty else { return received }
        try self.waitForInput(conn, atMost: timeout)
        guard PQstatus(conn) == CONNECTION_OK else { throw PostgresError.connectionLost(Self.message(of: conn)) }
        received = Self.pendingNotifications(conn)
        return received
    }

    private static func pendingNotifications(_ conn: OpaquePointer) -> [Notification] {
        var received: [Notification] = []
        while let notify = PQnotifies(conn) {
            let channel = notify.pointee.relname.map { String(cString: $0) } ?? ""
            let payload = notify.pointee.extra.map { String(cString: $0) } ?? ""
            received.append(Notification(channel: channel, payload: payload))
            PQfreemem(notify)
        }
        return received
    }

    /// A string literal for SQL, quoted and escaped by libpq for this connection's
    /// encoding and settings. For statements that cannot bind parameters, like COPY.
    func literal(_ value: String) throws -> String {
        let conn = try self.handle()
        // libpq stops at a NUL byte, which would quietly shorten the value.
        guard !value.utf8.contains(0) else { throw PostgresError.queryFailed(sqlState: nil, "a literal with a NUL byte") }
        guard let escaped = PQescapeLiteral(conn, value, value.utf8.count) else {
            throw PostgresError.queryFailed(sqlState: nil, Self.message(of: conn))
        }
        defer { PQfreemem(escaped) }
        return String(cString: escaped)
    }

    /// Runs `COPY … TO STDOUT` and hands each CopyData message (one CSV row, or
    /// the header) to `onRow`. When no message is ready, `onIdle` runs before
    /// waiting on the socket: the place to flush what was gathered, so readers
    /// see rows soon after the database has sent them, and to look for a
    /// cancel. It returns how long to wait for the server before it runs
    /// again (at most a second is waited in any case). Another thread stops
    /// the query with `PostgresCanceller`; this then throws `queryCancelled`.
    func copyOut(
        _ sql: String,
        onRow: (UnsafeRawBufferPointer) throws -> Void,
        onIdle: () throws -> Duration
    ) throws {
        let conn = try self.handle()
        guard PQsendQuery(conn, sql) == 1 else { throw PostgresError.connectionLost(Self.message(of: conn)) }
        // Until the COPY starts (a lock can hold it up), wait a second at a
        // time, and let `onIdle` look for a cancel or a shutdown meanwhile.
        while PQisBusy(conn) == 1 {
            try self.waitForInput(conn, atMost: try onIdle())
        }
        guard let first = PQgetResult(conn) else { throw PostgresError.connectionLost(Self.message(of: conn)) }
        let firstStatus = PQresultStatus(first)
        if firstStatus != PGRES_COPY_OUT {
            defer {
                PQclear(first)
                self.drainResults()
            }
            _ = try self.rows(of: first)
            throw PostgresError.queryFailed(sqlState: nil, "COPY did not start: \(String(cString: PQresStatus(firstStatus)))")
        }
        PQclear(first)

        var rowError: (any Error)?
        copying: while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let n = PQgetCopyData(conn, &buffer, 1)
            if n > 0, let buffer {
                defer { PQfreemem(buffer) }
                do {
                    try onRow(UnsafeRawBufferPointer(start: buffer, count: Int(n)))
                } catch {
                    // Stop reading. The connection is mid-COPY now: its owner
                    // closes it, which ends the query on the server.
                    rowError = error
                    break copying
                }
            } else if n == 0 {
                try self.waitForInput(conn, atMost: try onIdle())
            } else if n == -1 {
                break copying
            } else {
                throw PostgresError.connectionLost(Self.message(of: conn))
            }
        }
        if let rowError {
            throw rowError
        }
        // After the copy data: the command's final result says whether it succeeded.
        var failure: PostgresError?
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) != PGRES_COMMAND_OK, failure == nil {
                failure = Self.error(of: result)
            }
            PQclear(result)
        }
        if let failure { throw failure }
    }

    /// Waits until the server has sent something, or `atMost` (never more
    /// than a second) has passed: the caller then looks again for a cancel or
    /// a shutdown. So a COPY stops within a second even when its cancel could
    /// not reach the server (the host is gone; TCP keepalives end the
    /// connection itself later).
    private func waitForInput(_ conn: OpaquePointer, atMost: Duration = .seconds(1)) throws {
        var fds = pollfd(fd: PQsocket(conn), events: Int16(POLLIN), revents: 0)
        let (seconds, attoseconds) = min(atMost, .seconds(1)).components
        let milliseconds = Int32(max(0, min(1000, seconds * 1000 + attoseconds / 1_000_000_000_000_000)))
        while true {
            let ready = poll(&fds, 1, milliseconds)
            if ready == 0 { return }
            if ready > 0 { break }
            if errno != EINTR { throw PostgresError.connectionLost("poll: \(String(cString: strerror(errno)))") }
        }
        guard PQconsumeInput(conn) == 1 else { throw PostgresError.connectionLost(Self.message(of: conn)) }
    }

    private func drainResults() {
        guard let conn = self.conn else { return }
        while let result = PQgetResult(conn) { PQclear(result) }
    }

    private func rows(of result: OpaquePointer) throws -> QueryResult {
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return QueryResult(columns: [], rows: [])
        case PGRES_TUPLES_OK:
            let rowCount = PQntuples(result)
            let columnCount = PQnfields(result)
            let columns = (0..<columnCount).map { column in PQfname(result, column).map { String(cString: $0) } ?? "" }
            return QueryResult(
                columns: columns,
                rows: (0..<rowCount).map { row in
                    (0..<columnCount).map { column in
                        PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                    }
                })
        default:
            throw Self.error(of: result)
        }
    }

    private static func error(of result: OpaquePointer) -> PostgresError {
        let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let message = PQresultErrorMessage(result).map { String(cString: $0) } ?? "unknown error"
        return .queryFailed(sqlState: sqlState, message.trimmingTrailingNewlines())
    }

    private static func message(of conn: OpaquePointer) -> String {
        PQerrorMessage(conn).map { String(cString: $0).trimmingTrailingNewlines() } ?? "unknown error"
    }
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
