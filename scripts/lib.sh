# Shared by scripts/run.sh and scripts/test.sh: installs what is missing and
# runs a private PostgreSQL 15 cluster. Sourced, not run.

PG_BIN=/usr/lib/postgresql/15/bin

# Installs Debian packages the gateway and its tests need, only when missing.
ensure_packages() {
    local missing=()
    [ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15)
    command -v psql >/dev/null || missing+=(postgresql-client-15)
    pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev pkg-config)
    [ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    # The tests also use these (the fault suite freezes its own PostgreSQL with pgrep + kill).
    command -v pgrep >/dev/null || missing+=(procps)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v gzip >/dev/null || missing+=(gzip)
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
            return 1
        fi
        echo "installing ${missing[*]}" >&2
        # The postgresql package would start a cluster of its own; we run ours.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        rm -f /usr/sbin/policy-rc.d
    fi
    command -v swift >/dev/null || { echo "swift is not on PATH" >&2; return 1; }
}

# Runs a command as the owner of the cluster: PostgreSQL refuses to run as
# root, so root runs it as the unprivileged user 'postgres'.
as_pg_user() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_private_postgres DIR PORT: creates the cluster in DIR when needed and
# starts it on 127.0.0.1:PORT (socket in DIR too). Trust authentication, on
# loopback only: a private development database.
start_private_postgres() {
    local dir=$1 port=$2
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$dir"
        chown postgres:postgres "$dir"
        chmod 700 "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "the postgres user cannot reach $dir (a parent folder is closed to it)" >&2
            return 1
        fi
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg_user "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    # wal_level=minimal: a table created and filled in one transaction skips
    # the WAL, which makes first seeding much faster.
    as_pg_user "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c wal_level=minimal -c max_wal_senders=0 -c shared_buffers=256MB -c max_connections=200" >/dev/null
}

stop_private_postgres() {
    local dir=$1
    [ -f "$dir/postmaster.pid" ] && as_pg_user "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1
    return 0
}

# A folder the postgres user can use: DIR itself when every parent lets it
# through, else one under /var/tmp named after DIR.
reachable_pg_dir() {
    local dir=$1
    if [ "$(id -u)" != 0 ]; then echo "$dir"; return; fi
    local parent
    parent=$(dirname "$dir")
    if runuser -u postgres -- test -x "$parent"; then
        echo "$dir"
    else
        echo "/var/tmp/csv-gateway-pgdata-$(echo "$dir" | md5sum | cut -c1-12)"
    fi
}
