#!/usr/bin/env bash
# Benchmarks of the gateway against its peers (psql \copy, the seed's Python
# design, nginx), in one command; the table goes to BENCHMARKS.md (or --out).
#
#   scripts/bench.sh --database-url postgresql://user:pw@127.0.0.1:5432/db [--runs N]
#                    [--only export|baseline|download|ttfb|memory] [--quick] [--out FILE]
#
# The database must hold the users table already (the gateway is started with
# SEED=false). `scripts/bench.sh --help` lists every option. The work is done by
# scripts/bench.py (standard library only) and scripts/bench_baseline.py
# (psycopg 3, installed from PyPI into .build/bench-venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

case " $* " in
*" -h "* | *" --help "*) exec python3 scripts/bench.py --help ;;
esac

# What the gateway's scripts install (PostgreSQL client, curl, python3-venv, …),
# and nginx for the download comparison. Swift is needed only to build a
# missing gateway binary.
ensure_packages || echo "bench: continuing; the steps that need what is missing will fail" >&2
if ! command -v nginx >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "bench: nginx is missing (apt-get install nginx)" >&2
        exit 1
    fi
    echo "bench: installing nginx" >&2
    # The package would start a system nginx of its own; the benchmark runs its own.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

# 1000 slow readers need 1000 sockets here and as many descriptors in the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# bench.py starts every process in a group of its own and stops them all when
# it ends, also on SIGINT, SIGTERM and SIGHUP, which reach it directly.
exec python3 scripts/bench.py "$@"
