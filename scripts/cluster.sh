#!/usr/bin/env bash
# Runs several gateway instances on loopback that share one PostgreSQL and one
# cache folder, with nginx in front balancing round robin: the multi-instance
# deployment on one machine, to try failover by hand.
#
#   scripts/cluster.sh [options]   start the cluster; Ctrl-C (or `stop`) stops it
#   scripts/cluster.sh kill I      kill -9 instance I (from another terminal)
#   scripts/cluster.sh start I     start instance I again, with the same settings
#   scripts/cluster.sh status      each instance's pid and /health, and the balancer's
#   scripts/cluster.sh stop        stop the cluster, as Ctrl-C in its terminal does
#
# Options (environment variables in brackets):
#   --instances N     instances to run [INSTANCES], default 3
#   --base-port P     port of the first instance, default 8081 (then 8082, ...)
#   --port P          port of the balancer, default 8080
#   --listen ADDR     address of the balancer, default 127.0.0.1
#   --id-prefix S     INSTANCE_ID is S1, S2, ...; default gw
#   --cache-dir DIR   the shared CACHE_DIR [CACHE_DIR], default .cache-cluster/
#   --log-dir DIR     gw<i>.log and nginx's logs [CLUSTER_LOG_DIR], default .cluster-logs/
#   --timeout S       seconds an instance may take to answer /health, default 600
#                     (the first start seeds 10M rows)
#   --no-balancer     instances only, no nginx
# [GATEWAY_BIN] runs another binary than .build/release/gateway (which is
# built only when missing). [CLUSTER_RUN_DIR] moves the run folder (default
# .cluster-run/: each instance's launcher and pid, nginx's config); kill,
# start, status and stop find the cluster through it.
#
# Each instance gets HOST=127.0.0.1, PORT, CACHE_DIR and INSTANCE_ID from here
# and otherwise the environment this script was started with; the gateway
# reads .env itself, the environment winning (as for a single gateway).
# LEASE_SECONDS, LOG_LEVEL, SEED_ROWS... pass through that way.
#
# With no DATABASE_URL (in the environment or .env) it starts the private
# PostgreSQL of scripts/run.sh (.pgdata/, PRIVATE_PG_PORT, database
# `gateway`), so the two cannot run at once; set DATABASE_URL for that.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

run_dir=${CLUSTER_RUN_DIR:-$PWD/.cluster-run}

# --- Helpers ----------------------------------------------------------------

# setting NAME: the value the gateway will see, the environment's when set,
# else .env's (the gateway's own rule), else empty.
setting() {
    local name=$1
    if [ -n "${!name:-}" ]; then printf '%s' "${!name}"; return; fi
    [ -f .env ] || return 0
    ( set +u; set -a; source ./.env >/dev/null 2>&1; printf '%s' "${!name:-}" )
}

# pid_running PID: the process exists and is not a zombie waiting to be reaped
# (kill -0 succeeds on those).
pid_running() {
    local stat
    [ -n "${1:-}" ] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }    # past "(command name)", which may hold spaces
    [ "${stat%% *}" != Z ]
}

# Something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_code URL: the status of a GET, or 000 when nothing answers.
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

positive_int() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]]; }

# Names of instance I's files, and its port.
iid() { echo "$id_prefix$1"; }
iport() { echo $((base_port + $1 - 1)); }
launcher() { echo "$run_dir/$(iid "$1").sh"; }
pid_file() { echo "$run_dir/$(iid "$1").pid"; }
log_file() { echo "$log_dir/$(iid "$1").log"; }

# instance_pid I: prints the pid of instance I when it is running: the pid in
# its pid file, if that process is the gateway or its launcher about to exec
# it (not some later process that got the number of one that died).
instance_pid() {
    local pid cmdline
    pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
    pid_running "$pid" || return 1
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    case $cmdline in
    "$gateway_bin "* | *" $(launcher "$1") "*) echo "$pid" ;;
    *) return 1 ;;
    esac
}

# launch I: starts instance I from its launcher. setsid gives it a session of
# its own: Ctrl-C in a terminal reaches this script only, which then stops
# nginx and the instances in order, and an instance that `start` brought back
# outlives that command. env -i: the launcher holds the whole environment, so
# an instance started again by `start`, from any shell, gets the same one.
launch() {
    local i=$1 n=0
    rm -f "$(pid_file "$i")"
    setsid env -i "$BASH" "$(launcher "$i")" </dev/null &
    # Out of bash's job table: the watch loop reports an instance's end, not
    # bash's own "Killed ..." line (bash still reaps it).
    disown
    # The launcher writes its own pid, which the gateway keeps (exec).
    until [ -s "$(pid_file "$i")" ]; do
        n=$((n + 1))
        [ $n -le 100 ] || { say "$(iid "$i") did not start; see $(log_file "$i")"; return 1; }
        sleep 0.1
    done
}

# wait_healthy I TIMEOUT: waits until instance I answers /health with 200; on
# failure (it exited, or the time is up) shows the end of its log.
wait_healthy() {
    local i=$1 timeout=$2 pid code deadline
    deadline=$((SECONDS + timeout))
    while :; do
        pid=$(cat "$(pid_file "$i")" 2>/dev/null || true)
        if ! pid_running "$pid"; then
            say "$(iid "$i") exited while starting; the end of $(log_file "$i"):"
            tail -n 25 "$(log_file "$i")" >&2
            return 1
        fi
        code=$(http_code "http://127.0.0.1:$(iport "$i")/health")
        [ "$code" = 200 ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            say "$(iid "$i") did not answer /health with 200 in ${timeout}s (last: $code); the end of $(log_file "$i"):"
            tail -n 25 "$(log_file "$i")" >&2
            return 1
        fi
        sleep 0.5
    done
}

# load_cluster: the settings of the running cluster, for the subcommands.
load_cluster() {
    [ -f "$run_dir/cluster.env" ] || die "no cluster in $run_dir (start one with scripts/cluster.sh)"
    source "$run_dir/cluster.env"
    main_pid=$(cat "$run_dir/main.pid" 2>/dev/null || true)
    pid_running "$main_pid" || die "the cluster in $run_dir is not running (its script, pid ${main_pid:-?}, has ended)"
}

# instance_arg I: checks that I names an instance of the cluster.
instance_arg() {
    [ -n "${1:-}" ] && positive_int "$1" && [ "$1" -le "$instances" ] ||
        die "which instance? a number from 1 to $instances (scripts/cluster.sh kill|start I)"
}

# --- Subcommands for a running cluster --------------------------------------

case "${1:-}" in
kill)
    load_cluster
    instance_arg "${2:-}"
    pid=$(instance_pid "$2") || die "$(iid "$2") is not running"
    kill -KILL "$pid"
    say "$(iid "$2") (pid $pid) killed with SIGKILL, as a crash would. The others take over its"
    say "exports once its leases lapse (LEASE_SECONDS, default 10). Back: scripts/cluster.sh start $2"
    exit 0
    ;;
start)
    load_cluster
    instance_arg "${2:-}"
    if pid=$(instance_pid "$2"); then die "$(iid "$2") is running already (pid $pid)"; fi
    echo "=== $(iid "$2") started again by scripts/cluster.sh start $2 ===" >>"$(log_file "$2")"
    launch "$2"
    wait_healthy "$2" "$health_timeout" || die "$(iid "$2") did not come back"
    say "$(iid "$2") is back: http://127.0.0.1:$(iport "$2") (pid $(cat "$(pid_file "$2")"))"
    exit 0
    ;;
status)
    load_cluster
    for i in $(seq 1 "$instances"); do
        if pid=$(instance_pid "$i"); then state="pid $pid"; else state="down"; fi
        printf '%-12s http://127.0.0.1:%s  %-10s  /health %s\n' "$(iid "$i")" "$(iport "$i")" "$state" \
            "$(http_code "http://127.0.0.1:$(iport "$i")/health")"
    done
    [ -z "$balancer_url" ] || printf '%-12s %s  /health %s\n' balancer "$balancer_url" "$(http_code "$balancer_url/health")"
    exit 0
    ;;
stop)
    load_cluster
    kill -TERM "$main_pid"
    say "stopping the cluster (script pid $main_pid; downloads get up to ${grace}s to end)"
    while pid_running "$main_pid"; do sleep 0.5; done
    say "stopped"
    exit 0
    ;;
-h | --help) usage; exit 0 ;;
esac

# --- Starting a cluster -----------------------------------------------------

instances=${INSTANCES:-3}
base_port=8081
balancer_port=8080
listen=127.0.0.1
id_prefix=gw
cache_dir=${CACHE_DIR:-$PWD/.cache-cluster}
log_dir=${CLUSTER_LOG_DIR:-$PWD/.cluster-logs}
health_timeout=600
balancer=1
while [ $# -gt 0 ]; do
    case $1 in
    --instances) instances=${2:?}; shift 2 ;;
    --base-port) base_port=${2:?}; shift 2 ;;
    --port) balancer_port=${2:?}; shift 2 ;;
    --listen) listen=${2:?}; shift 2 ;;
    --id-prefix) id_prefix=${2:?}; shift 2 ;;
    --cache-dir) cache_dir=${2:?}; shift 2 ;;
    --log-dir) log_dir=${2:?}; shift 2 ;;
    --timeout) health_timeout=${2:?}; shift 2 ;;
    --no-balancer) balancer=""; shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
done

positive_int "$instances" && [ "$instances" -le 64 ] || die "--instances: 1 to 64, not $instances"
positive_int "$base_port" && [ $((base_port + instances - 1)) -le 65535 ] || die "--base-port: not a port range: $base_port"
positive_int "$balancer_port" && [ "$balancer_port" -le 65535 ] || die "--port: not a port: $balancer_port"
positive_int "$health_timeout" || die "--timeout: seconds, not $health_timeout"
# INSTANCE_ID's alphabet (the gateway checks it too; better to stop here).
[[ $id_prefix =~ ^[A-Za-z0-9._:-]{1,62}$ ]] || die "--id-prefix: 1 to 62 letters, digits, '.', '_', '-', ':'"
if [ -n "$balancer" ] && [ "$balancer_port" -ge "$base_port" ] && [ "$balancer_port" -lt $((base_port + instances)) ]; then
    die "--port $balancer_port is one of the instances' ports ($base_port..$((base_port + instances - 1)))"
fi
# Without API tokens the gateway serves only on loopback. A balancer on
# another address would open it to the network all the same: refuse that.
case $listen in
127.* | ::1 | localhost) ;;
*)
    if [ -n "$balancer" ] && [ -z "$(setting API_TOKENS)$(setting API_TOKENS_FILE)" ] && [ "$(setting ALLOW_ANONYMOUS)" != true ]; then
        die "--listen $listen is not loopback and no API_TOKENS are set: nginx would serve the gateway openly to the network"
    fi
    ;;
esac

ensure_packages
# nginx as the balancer, from Debian, like ensure_packages does for the rest.
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
if [ -n "$balancer" ] && [ ! -x "$nginx_bin" ]; then
    [ "$(id -u)" = 0 ] || die "nginx is missing: apt-get install nginx, run as root, or use --no-balancer"
    say "installing nginx"
    # The package would start nginx on port 80 with Debian's default site.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
    rm -f /usr/sbin/policy-rc.d
    nginx_bin=/usr/sbin/nginx
fi

# One cluster per run folder: a second one would take over its files.
if [ -f "$run_dir/main.pid" ] && pid_running "$(cat "$run_dir/main.pid")"; then
    die "a cluster is running already (script pid $(cat "$run_dir/main.pid")); scripts/cluster.sh stop"
fi
for i in $(seq 1 "$instances"); do
    ! port_busy "$(iport "$i")" || die "port $(iport "$i") (for $(iid "$i")) is in use"
done
[ -z "$balancer" ] || ! port_busy "$balancer_port" || die "port $balancer_port (for the balancer) is in use"

# The binary: built only when missing, so a cluster never rebuilds under a
# build that is running. `start I` runs whatever is there by then.
if [ -n "${GATEWAY_BIN:-}" ]; then
    [ -x "$GATEWAY_BIN" ] || die "GATEWAY_BIN=$GATEWAY_BIN is not an executable"
    gateway_bin=$GATEWAY_BIN
else
    gateway_bin=.build/release/gateway
    [ -x "$gateway_bin" ] || swift build -c release --product gateway
fi
gateway_bin=$(cd "$(dirname "$gateway_bin")" && pwd)/$(basename "$gateway_bin")

# An earlier run whose script was killed may have left instances behind.
for i in $(seq 1 "$instances"); do
    if pid=$(instance_pid "$i"); then
        die "$(iid "$i") of an earlier run is still running (pid $pid); end it first"
    fi
done

mkdir -p "$run_dir" "$log_dir" "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
log_dir=$(cd "$log_dir" && pwd)
run_dir=$(cd "$run_dir" && pwd)
# Others may pass through the run folder (nginx's workers, when root starts
# them as www-data, reach their temporary files) but not list it; what holds
# the database password is 0600.
chmod 711 "$run_dir"
rm -rf "$run_dir"/*.sh "$run_dir"/*.pid "$run_dir"/nginx-temp

# --- Stopping, whatever happens from here on ----------------------------------

private_pg="" pg_started="" nginx_pid="" stop_now=""
grace=$(( $(setting SHUTDOWN_GRACE | grep -E '^[0-9]+$' || echo 30) + 10 ))

# Graceful first, as in docker compose: nginx stops taking connections and
# lets running ones end (SIGQUIT), the instances let downloads end for
# SHUTDOWN_GRACE (SIGTERM); after grace seconds, or a second Ctrl-C, SIGKILL.
cleanup() {
    set +e
    trap - EXIT
    trap 'stop_now=1' INT TERM
    local pids=() pid i deadline
    if [ -n "$nginx_pid" ] && pid_running "$nginx_pid"; then kill -QUIT "$nginx_pid"; pids+=("$nginx_pid"); fi
    for i in $(seq 1 "$instances"); do
        if pid=$(instance_pid "$i"); then kill -TERM "$pid"; pids+=("$pid"); fi
    done
    if [ ${#pids[@]} -gt 0 ]; then
        say "stopping (up to ${grace}s for running downloads; Ctrl-C again to kill at once)"
        deadline=$((SECONDS + grace))
        while [ -z "$stop_now" ] && [ $SECONDS -lt $deadline ]; do
            local left=0
            for pid in "${pids[@]}"; do pid_running "$pid" && left=1; done
            [ $left = 1 ] || break
            sleep 0.2
        done
        # Each runs in a session and process group of its own (setsid), so
        # the group is exactly it and its children, e.g. nginx's workers.
        for pid in "${pids[@]}"; do
            if pid_running "$pid"; then say "pid $pid is still running: SIGKILL"; kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
        done
        for pid in "${pids[@]}"; do while pid_running "$pid"; do sleep 0.1; done; done
    fi
    [ -z "$pg_started" ] || stop_private_postgres "$private_pg"
    # What this run wrote, and nothing else: the run folder may be the user's.
    rm -rf "$run_dir"/*.sh "$run_dir"/*.pid "$run_dir"/cluster.env "$run_dir"/nginx.conf \
        "$run_dir"/nginx.lock "$run_dir"/nginx-temp
    rmdir "$run_dir" 2>/dev/null
    say "stopped; logs in $log_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo $$ >"$run_dir/main.pid"

# --- The database -------------------------------------------------------------

# As scripts/run.sh: the private PostgreSQL in .pgdata/ when no DATABASE_URL.
database_url=$(setting DATABASE_URL)
if [ -z "$database_url" ]; then
    private_pg=$(reachable_pg_dir "$PWD/.pgdata")
    pg_port=${PRIVATE_PG_PORT:-54329}
    say "no DATABASE_URL: starting a private PostgreSQL in $private_pg on port $pg_port"
    pg_password=$(start_private_postgres "$private_pg" "$pg_port")
    pg_started=1
    export PGPASSWORD=$pg_password
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'gateway'" | grep -q 1 ||
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres gateway
    unset PGPASSWORD
    database_url="postgresql://postgres:$pg_password@127.0.0.1:$pg_port/gateway"
fi
# In the environment, so every launcher carries it (never on a command line).
export DATABASE_URL=$database_url

# --- The instances ------------------------------------------------------------

# Each instance's launcher: this environment (minus what the shell keeps for
# itself) plus the instance's own settings, then exec the gateway. 0600: it
# holds the database password.
write_launcher() {
    local i=$1 name
    (
        umask 077
        {
            echo "# $(iid "$i") of scripts/cluster.sh, written $(date -Is). Run (by the cluster,"
            echo "# and by 'scripts/cluster.sh start $i') as: setsid env -i $BASH $(launcher "$i")"
            printf 'cd %q\n' "$PWD"
            for name in $(compgen -e); do
                case $name in _ | PWD | OLDPWD | SHLVL | HOST | PORT | CACHE_DIR | INSTANCE_ID) continue ;; esac
                printf 'export %s=%q\n' "$name" "${!name}"
            done
            printf 'export HOST=127.0.0.1 PORT=%q CACHE_DIR=%q INSTANCE_ID=%q\n' "$(iport "$i")" "$cache_dir" "$(iid "$i")"
            printf 'echo $$ >%q\n' "$(pid_file "$i")"
            printf 'exec >>%q 2>&1\n' "$(log_file "$i")"
            printf 'echo "=== %s (pid $$) starting at $(date -Is) ==="\n' "$(iid "$i")"
            printf 'exec %q\n' "$gateway_bin"
        } >"$(launcher "$i")"
    )
}

balancer_url=""
[ -z "$balancer" ] || balancer_url="http://$([[ $listen == *:* ]] && echo "[$listen]" || echo "$listen"):$balancer_port"
# What kill, start, status and stop need to know about this cluster.
{
    for name in instances base_port id_prefix log_dir gateway_bin balancer_url health_timeout grace; do
        printf '%s=%q\n' "$name" "${!name}"
    done
} >"$run_dir/cluster.env"

for i in $(seq 1 "$instances"); do
    write_launcher "$i"
    : >"$(log_file "$i")"
done

# The first instance alone: on an empty database it seeds `users`, and two
# instances must not seed at once. The others start once it is healthy.
say "starting $(iid 1) on port $(iport 1) (on an empty database it seeds first: tail -f $(log_file 1))"
launch 1
wait_healthy 1 "$health_timeout"
if [ "$instances" -gt 1 ]; then
    say "starting $(iid 2)..$(iid "$instances") on ports $(iport 2)..$(iport "$instances")"
    for i in $(seq 2 "$instances"); do launch "$i"; done
    for i in $(seq 2 "$instances"); do wait_healthy "$i" "$health_timeout"; done
fi

# --- The balancer -------------------------------------------------------------

if [ -n "$balancer" ]; then
    # nginx runs as the user who runs this. Started by root, its master stays
    # root (it opens the logs) and its workers run as www-data when that user
    # can reach the run folder; if a parent folder is closed to it (a project
    # under /root), as root, as the workers need their temporary folder.
    user_line=""
    if [ "$(id -u)" = 0 ]; then
        if id -u www-data >/dev/null 2>&1 && runuser -u www-data -- test -x "$run_dir"; then
            user_line="user www-data;"
        else
            user_line="user root;"
        fi
    fi
    mkdir -p "$run_dir/nginx-temp" && chmod 755 "$run_dir/nginx-temp"
    listen_addr=$([[ $listen == *:* ]] && echo "[$listen]" || echo "$listen")
    # Every path nginx writes is in the run and log folders, so it needs
    # neither /etc/nginx, /var/lib/nginx nor /var/log/nginx.
    cat >"$run_dir/nginx.conf" <<EOF
# Written by scripts/cluster.sh for one run; the proxy settings are shared
# with docker compose's balancer (deploy/nginx-gateway-proxy.conf).
$user_line
worker_processes 1;
# In the foreground, as a child of cluster.sh, which stops it.
daemon off;
pid "$run_dir/nginx.pid";
lock_file "$run_dir/nginx.lock";
error_log "$log_dir/nginx-error.log" notice;
# SIGQUIT lets running downloads end, for this long at most.
worker_shutdown_timeout ${grace}s;

events {
    worker_connections 1024;
}

http {
    client_body_temp_path "$run_dir/nginx-temp/body";
    proxy_temp_path "$run_dir/nginx-temp/proxy";
    fastcgi_temp_path "$run_dir/nginx-temp/fastcgi";
    uwsgi_temp_path "$run_dir/nginx-temp/uwsgi";
    scgi_temp_path "$run_dir/nginx-temp/scgi";
    server_tokens off;
    log_format gateway '\$time_iso8601 \$remote_addr "\$request" \$status \$body_bytes_sent '
                       'upstream=\$upstream_addr/\$upstream_status rt=\$request_time '
                       'id=\$upstream_http_x_request_id';
    access_log "$log_dir/nginx-access.log" gateway;

    upstream gateway {
$(for i in $(seq 1 "$instances"); do echo "        server 127.0.0.1:$(iport "$i") max_fails=1 fail_timeout=5s;"; done)
        keepalive 32;
        # Below the gateway's KEEP_ALIVE_TIMEOUT (15 s): nginx drops an idle
        # connection before the gateway does, never sending on one it closes.
        keepalive_timeout 10s;
    }

    server {
        listen $listen_addr:$balancer_port;
        # Which instance answered, to follow failover by hand (this local cluster only).
        add_header X-Gateway-Upstream \$upstream_addr always;
        include "$PWD/deploy/nginx-gateway-proxy.conf";
    }
}
EOF
    "$nginx_bin" -t -q -p "$run_dir/nginx-temp/" -e "$log_dir/nginx-error.log" -c "$run_dir/nginx.conf" ||
        die "nginx refused its config ($run_dir/nginx.conf)"
    setsid "$nginx_bin" -p "$run_dir/nginx-temp/" -e "$log_dir/nginx-error.log" -c "$run_dir/nginx.conf" \
        </dev/null >>"$log_dir/nginx-error.log" 2>&1 &
    nginx_pid=$!
    disown
    deadline=$((SECONDS + 15))
    until [ "$(http_code "$balancer_url/health")" = 200 ]; do
        if ! pid_running "$nginx_pid" || [ $SECONDS -ge $deadline ]; then
            say "nginx does not answer on $balancer_url; the end of $log_dir/nginx-error.log:"
            tail -n 20 "$log_dir/nginx-error.log" >&2
            exit 1
        fi
        sleep 0.2
    done
fi

# --- Running ------------------------------------------------------------------

rel() { echo "${1#"$PWD"/}"; }
{
    echo
    echo "cluster of $instances gateway instances up"
    if [ -n "$balancer" ]; then
        echo "  balancer  $balancer_url   (nginx, round robin; $(rel "$log_dir")/nginx-access.log)"
    fi
    for i in $(seq 1 "$instances"); do
        printf '  %-8s  http://127.0.0.1:%s  pid %-8s %s\n' "$(iid "$i")" "$(iport "$i")" "$(cat "$(pid_file "$i")")" "$(rel "$(log_file "$i")")"
    done
    if [ -n "$pg_started" ]; then echo "  database  private PostgreSQL in $(rel "$private_pg") on port $pg_port"; else echo "  database  DATABASE_URL"; fi
    echo "  cache     $(rel "$cache_dir") (shared)"
    echo
    echo "  failover  scripts/cluster.sh kill 2     (SIGKILL, as a crash)"
    echo "            scripts/cluster.sh start 2    (again, same settings)"
    echo "            scripts/cluster.sh status"
    echo "  stop      Ctrl-C here, or scripts/cluster.sh stop"
    echo
} >&2

# Report instances going down and coming back (kill, start, crashes) until
# stopped; nginx ending on its own ends the cluster.
declare -A was_up
for i in $(seq 1 "$instances"); do was_up[$i]="running (pid $(cat "$(pid_file "$i")"))"; done
while :; do
    if [ -n "$nginx_pid" ] && ! pid_running "$nginx_pid"; then
        say "nginx exited; see $log_dir/nginx-error.log"
        exit 1
    fi
    for i in $(seq 1 "$instances"); do
        if pid=$(instance_pid "$i"); then up="running (pid $pid)"; else up="down"; fi
        [ "$up" = "${was_up[$i]}" ] || say "$(iid "$i") is $up"
        was_up[$i]=$up
    done
    sleep 1 &
    wait $! || true
done
