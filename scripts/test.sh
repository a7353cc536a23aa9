#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, starts a throwaway
# PostgreSQL 15 on a free port, runs `swift test` against it, stops it.
# Each test server gets a database of its own, seeded with a few thousand rows.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages

pg_dir=$(mktemp -d /tmp/csv-gateway-test-pg.XXXXXX)
chmod 755 "$pg_dir"
pg_port=$(free_port)
cleanup() { stop_private_postgres "$pg_dir/data"; rm -rf "$pg_dir"; }
trap cleanup EXIT
pg_password=$(start_private_postgres "$pg_dir/data" "$pg_port")
export TEST_DATABASE_URL="postgresql://postgres:$pg_password@127.0.0.1:$pg_port/postgres"
export PSQL="$PG_BIN/psql"
echo "test PostgreSQL on port $pg_port" >&2

swift build --build-tests
swift test --skip-build "$@"
