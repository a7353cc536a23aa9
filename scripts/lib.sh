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
    # Signed links are tried with the download tools people use.
    command -v wget >/dev/null || missing+=(wget)
    command -v aria2c >/dev/null || missing+=(aria2)
    # The OpenAPI and metrics checks run Python tools from PyPI in a venv.
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    install_packages "${missing[@]}"
    command -v swift >/dev/null || { echo "swift is not on PATH" >&2; return 1; }
}

# What only the tests need: the page's test drives Debian's Chromium with its
# driver and Debian's Selenium, for /usr/bin/python3 (PyPI's Selenium needs
# newer dependencies than the package mirror has).
ensure_test_packages() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    /usr/bin/python3 -c 'import selenium' 2>/dev/null || missing+=(python3-selenium)
    install_packages "${missing[@]}"
}

# apt-get install of the packages named, if any (as root; else says what is missing).
install_packages() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: $*; install them (apt-get install $*) or run as root" >&2
        return 1
    fi
    echo "installing $*" >&2
    # The postgresql package would start a cluster of its own; we run ours.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    rm -f /usr/sbin/policy-rc.d
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
# starts it on 127.0.0.1:PORT, then prints the superuser's password.
#
# TCP connections (the only way in for the gateway) need a password (SCRAM):
# one generated at first start and kept in DIR/gateway.password (0600, in
# the cluster's own 0700 folder); an older cluster made with trust is moved
# to it on its next start. The Unix socket lives in DIR itself, which only the
# cluster's owner (and root) can enter, so only they can use it.
start_private_postgres() {
    # Called as $(start_private_postgres …), where bash turns `set -e` off:
    # every step that can fail returns on its own.
    local dir=$1 port=$2
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$dir" || return 1
        # Never follow a link planted in our place (chown would follow it).
        [ -L "$dir" ] && { echo "$dir is a symbolic link; refusing to use it" >&2; return 1; }
        chown postgres:postgres "$dir" && chmod 700 "$dir" || return 1
        if ! runuser -u postgres -- test -w "$dir"; then
            echo "the postgres user cannot reach $dir (a parent folder is closed to it)" >&2
            return 1
        fi
    fi
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg_user "$PG_BIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null || return 1
    fi
    local password_file="$dir/gateway.password"
    if ! as_pg_user test -s "$password_file"; then
        as_pg_user sh -c 'umask 077; openssl rand -hex 24 > "$1"' sh "$password_file" || return 1
    fi
    as_pg_user chmod 600 "$password_file" || return 1
    # Loopback TCP with a password; the socket (in DIR, 0700) for the owner.
    as_pg_user sh -c 'umask 077; printf "%s\n" "local all all trust" "host all all 127.0.0.1/32 scram-sha-256" "host all all ::1/128 scram-sha-256" > "$1"' sh "$dir/pg_hba.conf" || return 1
    # wal_level=minimal: a table created and filled in one transaction skips
    # the WAL, which makes first seeding much faster. A cluster that is
    # running already (another run of the scripts) makes this fail: the
    # caller stops rather than share, and later stop, a database in use.
    as_pg_user "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c wal_level=minimal -c max_wal_senders=0 -c shared_buffers=256MB -c max_connections=400 -c password_encryption=scram-sha-256" >/dev/null || {
        echo "could not start PostgreSQL in $dir (is it running already? see $dir/server.log)" >&2
        return 1
    }
    local password
    password=$(as_pg_user cat "$password_file") || return 1
    # Through stdin, so the password is never in a command line (ps shows those).
    printf "ALTER ROLE postgres PASSWORD '%s';\n" "$password" |
        as_pg_user "$PG_BIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null || return 1
    echo "$password"
}

stop_private_postgres() {
    local dir=$1
    [ -f "$dir/postmaster.pid" ] && as_pg_user "$PG_BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1
    return 0
}

# A folder the postgres user can use: DIR itself when every parent lets it
# through, else one in the postgres user's home (/var/lib/postgresql), named
# after DIR. Never in a world-writable folder such as /tmp or /var/tmp, where
# another local user could plant the path before root uses it.
reachable_pg_dir() {
    local dir=$1
    if [ "$(id -u)" != 0 ]; then echo "$dir"; return; fi
    local parent
    parent=$(dirname "$dir")
    if runuser -u postgres -- test -x "$parent"; then
        echo "$dir"
    else
        local home
        home=$(getent passwd postgres | cut -d: -f6)
        echo "${home:-/var/lib/postgresql}/csv-gateway-$(echo "$dir" | md5sum | cut -c1-12)"
    fi
}
