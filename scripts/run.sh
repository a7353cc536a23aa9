#!/usr/bin/env bash
# Runs the gateway. With no DATABASE_URL (in the environment or .env), it
# first starts a private PostgreSQL 15 under .pgdata/ in the project folder
# (password authentication; the password is generated and kept 0600 in it);
# the gateway seeds it on first start. Builds in release mode, then serves
# on PORT (default 8080). Ctrl-C or SIGTERM stops the gateway (gracefully)
# and then the private database.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -f .env ]; then set -a; source .env; set +a; fi
ensure_packages

private_pg=""
gateway_pid=""
# One way out, whatever ends the script (Ctrl-C, SIGTERM, the gateway
# exiting, a failed step): the gateway gets one SIGTERM and its graceful
# shutdown (finished downloads get SHUTDOWN_GRACE), then the private
# PostgreSQL is stopped. Nothing here may stop the cleanup half-way, so it
# runs without `set -e`. A second Ctrl-C or SIGTERM meanwhile is passed on
# as the gateway's "exit at once"; the database is still stopped after it.
cleanup() {
    set +e
    if [ -n "$gateway_pid" ]; then
        trap 'kill -TERM "$gateway_pid" 2>/dev/null' INT TERM
        kill -TERM "$gateway_pid" 2>/dev/null
        # `wait` returns early when a trapped signal arrives: wait until it is gone.
        while kill -0 "$gateway_pid" 2>/dev/null; do wait "$gateway_pid" 2>/dev/null; done
    fi
    trap '' INT TERM
    [ -n "$private_pg" ] && stop_private_postgres "$private_pg"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${DATABASE_URL:-}" ]; then
    private_pg=$(reachable_pg_dir "$PWD/.pgdata")
    pg_port=${PRIVATE_PG_PORT:-54329}
    echo "no DATABASE_URL: starting a private PostgreSQL in $private_pg on port $pg_port" >&2
    pg_password=$(start_private_postgres "$private_pg" "$pg_port")
    export PGPASSWORD=$pg_password
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'gateway'" | grep -q 1 ||
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres gateway
    unset PGPASSWORD
    # The password reaches the gateway in its environment (readable only by
    # its own user), never on a command line.
    export DATABASE_URL="postgresql://postgres:$pg_password@127.0.0.1:$pg_port/gateway"
fi

# GATEWAY_BIN: a gateway binary already built (the tests use their own).
gateway_bin=${GATEWAY_BIN:-}
if [ -z "$gateway_bin" ]; then
    swift build -c release --product gateway
    gateway_bin=.build/release/gateway
fi
echo "serving on ${HOST:-127.0.0.1}:${PORT:-8080}" >&2
# The gateway runs in a process group of its own (job control on while it
# starts), so a terminal's Ctrl-C reaches only this script, which passes on
# exactly one SIGTERM. Sharing the group, it got the terminal's SIGINT and
# then the script's SIGTERM: two signals, which the gateway takes as "exit
# at once", cutting downloads that had their grace.
set -m
"$gateway_bin" &
gateway_pid=$!
set +m
wait "$gateway_pid"
