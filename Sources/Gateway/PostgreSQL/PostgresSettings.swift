/// How the gateway connects to PostgreSQL: the URL and the bounds every
/// connection gets. The URL may set any of them itself, and then it wins.
struct PostgresSettings: Sendable {
    /// A libpq URI or `key=value` string; empty means libpq's defaults.
    var url: String
    /// Seconds to wait for a connection (libpq `connect_timeout`).
    var connectTimeoutSeconds = 5
    /// TCP keepalives: a host that is gone is noticed after about
    /// idle + interval × count seconds, even in the middle of a long COPY.
    var keepalivesIdleSeconds = 10
    var keepalivesIntervalSeconds = 5
    var keepalivesCount = 3
    /// Milliseconds unacknowledged data may wait before the connection is
    /// dropped (libpq `tcp_user_timeout`).
    var tcpUserTimeoutMilliseconds = 30_000
    /// What `pg_stat_activity` shows for the connection.
    var applicationName = "csv-export-gateway"
    /// `statement_timeout` of the session; nil leaves the server's (exports
    /// may run for minutes; journal statements must not).
    var statementTimeoutMilliseconds: Int?
    /// How long the client waits for a statement's answer before it gives
    /// up on the connection: the statement timeout and 2 s more, so that a
    /// server that stopped answering altogether is noticed too. Nil with no
    /// statement timeout.
    var clientTimeoutMilliseconds: Int? { self.statementTimeoutMilliseconds.map { $0 + 2000 } }

    init(url: String, connectTimeoutSeconds: Int = 5, statementTimeoutMilliseconds: Int? = nil) {
        self.url = url
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
    }

    /// The same, with another statement timeout.
    func with(statementTimeoutMilliseconds: Int?) -> PostgresSettings {
        var copy = self
        copy.statementTimeoutMilliseconds = statementTimeoutMilliseconds
        return copy
    }

    /// The libpq keywords set before the URL's own.
    var defaults: [(String, String)] {
        [
            ("connect_timeout", String(max(2, self.connectTimeoutSeconds))),
            ("keepalives", "1"),
            ("keepalives_idle", String(self.keepalivesIdleSeconds)),
            ("keepalives_interval", String(self.keepalivesIntervalSeconds)),
            ("keepalives_count", String(self.keepalivesCount)),
            ("tcp_user_timeout", String(self.tcpUserTimeoutMilliseconds)),
            ("application_name", self.applicationName),
        ]
    }
}
