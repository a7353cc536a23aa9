#!/usr/bin/env bash
# Runs the gateway. With no DATABASE_URL (in the environment or .env), it
# first starts a private PostgreSQL 15 under .pgdata/ in the project folder
# (password authentication; the password is generated and kept 0600 in it);
# the gateway seeds it on first start. Builds in release mode, then serves
# on PORT (default 8080). Ctrl-C stops the gateway and the private database.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ -f .env ]; then set -a; source .env; set +a; fi
ensure_packages

private_pg=""
if [ -z "${DATABASE_URL:-}" ]; then
    private_pg=$(reachable_pg_dir "$PWD/.pgdata")
    pg_port=${PRIVATE_PG_PORT:-54329}
    echo "no DATABASE_URL: starting a private PostgreSQL in $private_pg on port $pg_port" >&2
    pg_password=$(start_private_postgres "$private_pg" "$pg_port")
    trap 'stop_private_postgres "$private_pg"' EXIT
    export PGPASSWORD=$pg_password
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'gateway'" | grep -q 1 ||
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres gateway
    unset PGPASSWORD
    # The password reaches the gateway in its environment (readable only by
    # its own user), never on a command line.
    export DATABASE_URL="postgresql://postgres:$pg_password@127.0.0.1:$pg_port/gateway"
fi

swift build -c release --product gateway
echo "serving on ${HOST:-127.0.0.1}:${PORT:-8080}" >&2
.build/release/gateway &
gateway_pid=$!
trap 'kill -TERM $gateway_pid 2>/dev/null; wait $gateway_pid; [ -n "$private_pg" ] && stop_private_postgres "$private_pg"' EXIT
trap 'exit 130' INT TERM
wait $gateway_pid
