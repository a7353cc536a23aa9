#!/usr/bin/env python3
"""Benchmarks of the gateway against its peers; run it through scripts/bench.sh.

Sections (all by default, one or a comma list with --only):

  export    full and two filtered exports through the gateway (POST, then the
            live download streamed to a file by curl; wall time from the POST
            to the last byte) against `psql \\copy (SELECT … ORDER BY id) TO
            file` with TimeZone UTC, interleaved; the two files must be the
            same bytes (SHA-256), else the script fails
  baseline  the full export through the gateway against the seed's design
            (scripts/bench_baseline.py: psycopg 3 named cursor + Python's csv
            module, written to a file), interleaved
  download  the finished full file from the gateway against the same file
            from nginx (`sendfile on`, a private config on a loopback port),
            `curl -s -o /dev/null`, interleaved after one warm-up each
  ttfb      time to the first byte of a live download right after the POST,
            for the three exports, against the seed's design's first batch
  memory    the gateway's peak resident memory (VmHWM, the process started
            afresh for each load) with 12 live readers of one export
            (loadtest/live_readers.py), then 100 and 1000 slow readers of the
            finished file (loadtest/slow_downloads.py), against the seed's
            promise of 150 MB

Every process it starts runs in a process group of its own and is stopped
on exit, also on SIGINT, SIGTERM and SIGHUP; every step has a time limit.
Exports it makes are deleted again, so the gateway's journal keeps nothing.
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("export", "baseline", "download", "ttfb", "memory")
COLUMNS = "id, email, full_name, country_code, subscription_tier, lifetime_value, created_at, last_login_at, notes"
# (label, gateway query string, the SQL the gateway runs, as psql runs it)
CASES = [
    ("full", "", f"SELECT {COLUMNS} FROM users ORDER BY id"),
    ("country_code=US", "country_code=US",
     f"SELECT {COLUMNS} FROM users WHERE country_code IN ('US') ORDER BY id"),
    ("subscription_tier=pro&min_ltv=500", "subscription_tier=pro&min_ltv=500",
     f"SELECT {COLUMNS} FROM users WHERE subscription_tier IN ('pro') AND lifetime_value >= '500'::numeric ORDER BY id"),
]
SEED_MEMORY_PROMISE = 150_000_000  # bytes: "under 150 MB for 10M+ rows"
PSYCOPG = "psycopg[binary]==3.3.9"
VENV = ROOT / ".build" / "bench-venv"
# Settings of the gateway that must not leak in from the caller's environment
# (set them with --gateway-env KEY=VALUE instead).
GATEWAY_KEYS = (
    "DATABASE_URL HOST PORT CACHE_DIR SEED_ROWS SEED MAX_CONCURRENT_EXPORTS MAX_QUEUED_EXPORTS "
    "EXPORT_TTL CACHE_MAX_BYTES CACHE_TTL FAST_START GZIP_LEVEL RANGE_WAIT_SECONDS MAX_EXPORTS "
    "GZIP_WORKERS GZIP_QUEUE MAX_CONNECTIONS REQUEST_HEADER_TIMEOUT KEEP_ALIVE_TIMEOUT "
    "MAX_HEADER_BYTES SEND_TIMEOUT DOWNLOAD_BUFFER_BYTES SHUTDOWN_GRACE DATABASE_CONNECT_TIMEOUT "
    "JOURNAL_STATEMENT_TIMEOUT API_TOKENS API_TOKENS_FILE ALLOW_ANONYMOUS SIGNING_KEY LINK_TTL "
    "METRICS_TOKEN LOG_LEVEL").split()


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values):
    return statistics.median(values) if values else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def differing_lines(a, b):
    """Lines that differ between two files, and the lines of the first."""
    differ = total = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            la, lb = fa.readline(), fb.readline()
            if not la and not lb:
                return differ, total
            total += bool(la)
            differ += la != lb


class Children:
    """Every process the benchmark starts, each in a process group of its own."""

    def __init__(self):
        self.procs = []

    def spawn(self, cmd, **kwargs):
        proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc, grace=10.0, sig=signal.SIGTERM):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def run(self, cmd, timeout, check=True, **kwargs):
        """Runs cmd to its end within timeout seconds; (status, stdout, stderr)."""
        proc = self.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, grace=2)
            raise BenchError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s")
        self.procs.remove(proc)
        if check and proc.returncode != 0:
            raise BenchError(f"{' '.join(map(str, cmd[:2]))} … exited {proc.returncode}: {(err or out).strip()[-2000:]}")
        return proc.returncode, out, err

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc, grace=10)


class Database:
    """The database under test. A URI's password goes to PGPASSWORD for psql,
    never onto a command line."""

    def __init__(self, url, children):
        self.url, self.children = url, children
        self.password = None
        self.target = url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("postgresql", "postgres") and "@" in parts.netloc:
            userinfo, _, hostport = parts.netloc.rpartition("@")
            user, colon, password = userinfo.partition(":")
            if colon:
                self.password = urllib.parse.unquote(password)
                self.target = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{hostport}"))

    def env(self):
        env = dict(os.environ, PGTZ="UTC", PGCONNECT_TIMEOUT="10")
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def psql(self, *commands, timeout=600):
        cmd = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.target]
        for c in commands:
            cmd += ["-c", c]
        return self.children.run(cmd, timeout, env=self.env())[1].strip()

    def copy_to(self, sql, path, timeout):
        """psql \\copy of the query into path, TimeZone UTC; wall seconds."""
        start = time.perf_counter()
        self.psql("SET TimeZone = 'UTC'", f"\\copy ({sql}) TO '{path}' WITH (FORMAT csv, HEADER true)", timeout=timeout)
        return time.perf_counter() - start


class Gateway:
    """One gateway process on a port of its own, against the database under
    test, with the benchmark's cache folder."""

    def __init__(self, bench, extra_env=None, name="gateway"):
        self.bench, self.extra_env, self.name = bench, extra_env or {}, name
        self.proc = None
        self.port = None

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        b = self.bench
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in GATEWAY_KEYS}
        env.update(DATABASE_URL=b.db.url, HOST="127.0.0.1", PORT=str(self.port), CACHE_DIR=str(b.cache_dir),
                   SEED="false", SHUTDOWN_GRACE="5")
        env.update(b.gateway_env)
        env.update(self.extra_env)
        b.starts += 1
        self.log_path = b.work / f"{self.name}-{b.starts}.log"
        with open(self.log_path, "ab") as logfile:
            # The working folder has no .env, so only this environment counts.
            self.proc = b.children.spawn([str(b.binary)], cwd=b.work, env=env, stdout=logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the gateway exited ({self.proc.returncode}) at start; see {self.log_path}:\n{self.log_tail()}")
            try:
                if self.request("GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"the gateway did not answer /health with 200 within 120 s; see {self.log_path}")
            time.sleep(0.2)
        self.wait_idle(b.args.timeout, "at start (exports of the journal run again)")
        return self

    def log_tail(self, lines=15):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, delete_leftovers=True):
        """SIGTERM (SHUTDOWN_GRACE=5), after deleting the exports the
        benchmark made and has not deleted yet, unless told to keep them."""
        if self.proc is not None:
            if delete_leftovers:
                self.bench.delete_leftovers(self)
            self.bench.children.stop(self.proc, grace=15)
            self.proc = None

    def request(self, method, path, headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metrics(self):
        status, body = self.request("GET", "/metrics")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    values[key] = float(value)
                except ValueError:
                    pass
        return values

    def wait_idle(self, timeout, why=""):
        """Waits until no export runs or waits."""
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            m = self.metrics()
            busy, queued = m.get("gateway_export_workers_busy", 0), m.get("gateway_export_queue_depth", 0)
            if busy == 0 and queued == 0:
                return
            if not announced and why:
                log(f"waiting for {busy:.0f} running and {queued:.0f} queued exports {why}")
                announced = True
            if time.monotonic() > deadline:
                raise BenchError(f"the gateway still had exports running after {timeout:.0f} s {why}")
            time.sleep(0.2)

    def create(self, query, fresh=True):
        """POST /exports/csv; the status JSON. fresh: Cache-Control: no-cache,
        so a new run answers, never a cached file or a running twin."""
        headers = {"Cache-Control": "no-cache"} if fresh else {}
        status, body = self.request("POST", "/exports/csv?" + query, headers)
        if status != 202:
            raise BenchError(f"POST /exports/csv?{query} answered {status}: {body[:300]!r}")
        st = json.loads(body)
        self.bench.created.add(st["exportId"])
        if fresh and st["status"] not in ("queued", "running"):
            raise BenchError(f"a no-cache POST answered an export that is {st['status']}, not a new run")
        return st

    def status(self, export_id):
        status, body = self.request("GET", f"/exports/{export_id}/status")
        if status != 200:
            raise BenchError(f"status of {export_id} answered {status}")
        return json.loads(body)

    def wait_completed(self, export_id, timeout):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(export_id)
            if st["status"] == "completed":
                return st
            if st["status"] in ("failed", "cancelled"):
                raise BenchError(f"export {export_id} {st['status']}: {st.get('error')}")
            if time.monotonic() > deadline:
                raise BenchError(f"export {export_id} not completed within {timeout:.0f} s")
            time.sleep(0.1)

    def delete(self, export_id):
        """Deletes an export; a running one is cancelled first, then deleted,
        so the journal keeps no row of it."""
        for _ in range(3):
            status, _ = self.request("DELETE", f"/exports/{export_id}")
            if status in (204, 404):
                self.bench.created.discard(export_id)
                return
            if status != 200:  # 200: cancelled; the next DELETE removes it
                raise BenchError(f"DELETE {export_id} answered {status}")
            time.sleep(0.05)
        raise BenchError(f"export {export_id} could not be deleted")

    def vm(self, key="VmHWM"):
        """KiB of VmHWM or VmRSS of the process."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise BenchError(f"no {key} in /proc/{self.proc.pid}/status")


class Nginx:
    """Debian's nginx on a loopback port, serving one folder with sendfile;
    everything it writes (pid, logs, temp files) under a folder of its own."""

    def __init__(self, bench, root):
        self.bench, self.root = bench, root
        self.dir = bench.work / "nginx"
        self.proc = None

    def start(self):
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        d = self.dir
        temp_paths = "\n".join(f"    {kind}_temp_path {d}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # The cache folders are 0700 root: a root worker reads them.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = (f"{user}worker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\n"
                f"error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n"
                f"http {{\n    access_log off;\n    sendfile on;\n{temp_paths}\n"
                f"    types {{ text/csv csv; }}\n    default_type application/octet-stream;\n"
                f"    server {{\n        listen 127.0.0.1:{self.port};\n        root {self.root};\n    }}\n}}\n")
        (d / "nginx.conf").write_text(conf)
        cmd = ["nginx", "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"]
        self.bench.children.run(cmd + ["-t", "-q"], 30)
        self.proc = self.bench.children.spawn(cmd, stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "ab"))
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"nginx exited ({self.proc.returncode}); see {d}/error.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("nginx did not listen within 20 s")
                time.sleep(0.1)

    def stop(self):
        if self.proc is not None:
            self.bench.children.stop(self.proc, grace=10, sig=signal.SIGQUIT)
            self.proc = None


class Bench:
    def __init__(self, args):
        self.args = args
        self.children = Children()
        self.db = Database(args.database_url, self.children)
        self.binary = Path(args.gateway).resolve()
        self.gateway_env = dict(kv.split("=", 1) for kv in args.gateway_env)
        self.created = set()  # export ids made and not deleted yet
        self.starts = 0
        self.rows = []  # rows of the table
        self.facts = {}
        self.failures = []
        self.shared = None  # the gateway of the export, baseline, download and ttfb sections

    # -- plumbing ------------------------------------------------------------

    def delete_leftovers(self, gw):
        for export_id in list(self.created):
            try:
                gw.delete(export_id)
            except (BenchError, OSError) as e:
                log(f"could not delete export {export_id}: {e}")

    def gateway(self):
        if self.shared is None:
            self.shared = Gateway(self).start()
        return self.shared

    def stop_shared(self):
        if self.shared is not None:
            self.shared.stop()
            self.shared = None

    def curl(self, url, out, timeout):
        """curl's status, bytes and time_total for one download."""
        cmd = ["curl", "-sS", "-o", str(out), "--max-time", str(int(timeout)),
               "-w", "%{http_code} %{size_download} %{time_total}", url]
        code, stdout, stderr = self.children.run(cmd, timeout + 10, check=False)
        if code != 0:
            raise BenchError(f"curl {url} exited {code}: {stderr.strip()}")
        http_code, size, total = stdout.split()
        if http_code != "200":
            raise BenchError(f"curl {url}: HTTP {http_code}")
        return int(size), float(total)

    def gateway_export(self, gw, query, out):
        """POST, then the download streamed by curl to out: wall seconds from
        the POST to the last byte, and the finished export's status."""
        start = time.perf_counter()
        st = gw.create(query)
        size, _ = self.curl(gw.base + f"/exports/{st['exportId']}/download", out, self.args.timeout)
        seconds = time.perf_counter() - start
        done = gw.status(st["exportId"])
        gw.delete(st["exportId"])
        if done["status"] != "completed" or done["sizeBytes"] != size:
            raise BenchError(f"export {st['exportId']}: {done['status']}, {done['sizeBytes']} bytes, curl got {size}")
        return seconds, done

    def baseline_python(self, mode, sql, out):
        env = dict(os.environ, BENCH_DATABASE_URL=self.db.url)
        start = time.perf_counter()
        _, stdout, _ = self.children.run([str(VENV / "bin" / "python"), str(ROOT / "scripts" / "bench_baseline.py"),
                                          mode, "--sql", sql, "--out", str(out)], self.args.timeout, env=env)
        result = json.loads(stdout)
        result["wall"] = time.perf_counter() - start
        return result

    def empty_strings(self):
        """Empty strings in the text columns: COPY writes `""`, csv.writer nothing."""
        terms = " + ".join(f"coalesce(({c} = '')::int, 0)" for c in ("email", "full_name", "country_code", "subscription_tier", "notes"))
        return int(self.db.psql(f"SELECT coalesce(sum({terms}), 0) FROM users", timeout=self.args.timeout))

    def ensure_venv(self):
        marker = VENV / ".installed"
        if marker.exists() and marker.read_text().strip() == PSYCOPG:
            return
        log(f"installing {PSYCOPG} into {VENV}")
        shutil.rmtree(VENV, ignore_errors=True)
        self.children.run([sys.executable, "-m", "venv", str(VENV)], 300)
        self.children.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", PSYCOPG], 600)
        marker.write_text(PSYCOPG + "\n")

    def add(self, what, gateway, peer, baseline, ratio, runs, check):
        self.rows.append((what, gateway, peer, baseline, ratio, runs, check))
        log(f"{what}: gateway {gateway}, {peer} {baseline}, ratio {ratio}; {check}")

    # -- sections --------------------------------------------------------------

    def section_export(self):
        a = self.args
        gw = self.gateway()
        if not a.no_warmup:
            for label, _, sql in CASES:
                log(f"export: warm-up psql \\copy of {label} to /dev/null")
                self.db.copy_to(sql, "/dev/null", a.timeout)
        times = {label: ([], []) for label, _, _ in CASES}
        checks = {label: [] for label, _, _ in CASES}
        for run in range(a.runs):
            for label, query, sql in CASES:
                g_out, p_out = self.work / "gateway.csv", self.work / "psql.csv"
                g_seconds, done = self.gateway_export(gw, query, g_out)
                p_seconds = self.db.copy_to(sql, p_out, a.timeout)
                g_sha, p_sha = sha256_file(g_out), sha256_file(p_out)
                p_size = p_out.stat().st_size
                g_out.unlink()
                p_out.unlink()
                same = g_sha == p_sha == done["sha256"]
                checks[label].append((same, done["sizeBytes"], p_size, done["rowsWritten"]))
                if not same:
                    self.failures.append(f"export {label} run {run + 1}: gateway sha256 {g_sha} "
                                         f"({done['sizeBytes']} bytes) != psql {p_sha} ({p_size} bytes)")
                times[label][0].append(g_seconds)
                times[label][1].append(p_seconds)
                log(f"export {label} run {run + 1}/{a.runs}: gateway {g_seconds:.3f} s, psql {p_seconds:.3f} s, "
                    f"{'same bytes' if same else 'DIFFERENT BYTES'}")
                if label == "full":
                    self.facts["full_bytes"], self.facts["full_rows"] = done["sizeBytes"], done["rowsWritten"]
        for label, _, _ in CASES:
            g, p = times[label]
            ok = all(c[0] for c in checks[label])
            size, rows = checks[label][0][1], checks[label][0][3]
            check = (f"sha256 equal, {size:,} bytes, {rows:,} rows" if ok
                     else "**sha256 DIFFERS** (" + "; ".join(f"gateway {c[1]:,} / psql {c[2]:,} bytes" for c in checks[label] if not c[0]) + ")")
            self.add(f"export `{label}` (POST to last byte)", secs(median(g)), "`psql \\copy`", secs(median(p)),
                     ratio(median(g), median(p)), runs_text(g, p, "s"), check)

    def section_baseline(self):
        a = self.args
        self.ensure_venv()
        gw = self.gateway()
        label, query, sql = CASES[0]
        g_times, b_times, inner, rss = [], [], [], []
        check = None
        for run in range(a.runs):
            g_out, b_out = self.work / "gateway.csv", self.work / "baseline.csv"
            g_seconds, done = self.gateway_export(gw, query, g_out)
            result = self.baseline_python("export", sql, b_out)
            g_times.append(g_seconds)
            b_times.append(result["wall"])
            inner.append(result["seconds"])
            rss.append(result["maxRssKiB"])
            b_sha = sha256_file(b_out)
            if check is None:
                if b_sha == done["sha256"]:
                    check = "same bytes as the gateway (and psql)"
                else:
                    differ, total = differing_lines(g_out, b_out)
                    check = (f"differs from PostgreSQL's CSV in {differ:,} of {total:,} lines "
                             f"({b_out.stat().st_size:,} bytes); the table holds {self.empty_strings():,} empty "
                             f"strings, which csv.writer writes like NULL (nothing instead of `\"\"`)")
                self.facts["baseline_sha"] = b_sha
            elif b_sha != self.facts["baseline_sha"]:
                self.failures.append(f"baseline run {run + 1} wrote other bytes than its first run")
            g_out.unlink()
            b_out.unlink()
            log(f"baseline run {run + 1}/{a.runs}: gateway {g_seconds:.3f} s, Python {result['wall']:.3f} s "
                f"(export itself {result['seconds']:.3f} s, peak RSS {result['maxRssKiB'] / 1024:.0f} MiB)")
        self.facts["baseline_rss_mib"] = max(rss) / 1024
        self.add("export `full`, seed's design (named cursor, 10,000-row batches, csv module, to a file)",
                 secs(median(g_times)), "Python + psycopg 3", secs(median(b_times)),
                 ratio(median(g_times), median(b_times)),
                 runs_text(g_times, b_times, "s") + f"; Python's own timing {fmt_list(inner)} s (without start and connect); "
                 f"its peak RSS {max(rss) / 1024:.0f} MiB", check)

    def section_download(self):
        a = self.args
        gw = self.gateway()
        st = gw.create(CASES[0][1])
        log("download: making the full export")
        done = gw.wait_completed(st["exportId"], a.timeout)
        objects = self.cache_dir / "objects"
        path = objects / f"{done['sha256']}.csv"
        if not path.is_file() or path.stat().st_size != done["sizeBytes"]:
            raise BenchError(f"the finished file is not at {path}")
        nginx = Nginx(self, objects).start()
        try:
            urls = {"gateway": gw.base + f"/exports/{st['exportId']}/download",
                    "nginx": f"http://127.0.0.1:{nginx.port}/{path.name}"}
            for name, url in urls.items():  # warm-up: the page cache, both servers' first request
                size, _ = self.curl(url, "/dev/null", a.timeout)
                if size != done["sizeBytes"]:
                    raise BenchError(f"{name} sent {size} bytes of {done['sizeBytes']}")
            times = {"gateway": [], "nginx": []}
            for run in range(a.runs):
                for name, url in urls.items():
                    size, seconds = self.curl(url, "/dev/null", a.timeout)
                    if size != done["sizeBytes"]:
                        raise BenchError(f"{name} sent {size} bytes of {done['sizeBytes']}")
                    times[name].append(seconds)
                log(f"download run {run + 1}/{a.runs}: gateway {times['gateway'][-1]:.3f} s, nginx {times['nginx'][-1]:.3f} s")
        finally:
            nginx.stop()
        gw.delete(st["exportId"])
        g, n = times["gateway"], times["nginx"]
        self.add("download of the finished full file (`curl -s -o /dev/null`, time_total)", secs(median(g)),
                 f"nginx {self.facts.get('nginx_version', '')} `sendfile on`".replace("  ", " "), secs(median(n)),
                 ratio(median(g), median(n)), runs_text(g, n, "s") + "; after one warm-up each",
                 f"{done['sizeBytes']:,} bytes each time")

    def section_ttfb(self):
        a = self.args
        self.ensure_venv()
        gw = self.gateway()
        for label, query, sql in CASES:
            after_post, with_post, peer = [], [], []
            for _ in range(a.ttfb_rounds):
                gw.wait_idle(60, "from the previous round")
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
                try:
                    t0 = time.perf_counter()
                    conn.request("POST", "/exports/csv?" + query, headers={"Cache-Control": "no-cache"})
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 202:
                        raise BenchError(f"POST answered {resp.status}: {body[:200]!r}")
                    export_id = json.loads(body)["exportId"]
                    self.created.add(export_id)
                    t1 = time.perf_counter()
                    conn.request("GET", f"/exports/{export_id}/download")
                    resp = conn.getresponse()
                    first = resp.read1(1)
                    t2 = time.perf_counter()
                    if resp.status != 200 or not first:
                        raise BenchError(f"download of {export_id}: HTTP {resp.status}, no body byte")
                finally:
                    conn.close()
                gw.delete(export_id)
                after_post.append((t2 - t1) * 1000)
                with_post.append((t2 - t0) * 1000)
                result = self.baseline_python("first-byte", sql, self.work / "first.csv")
                peer.append(result["seconds"] * 1000)
            log(f"ttfb {label}: gateway {fmt_list(after_post, 1)} ms, Python {fmt_list(peer, 1)} ms")
            self.add(f"first byte of a live download after the POST's answer, `{label}`", ms(median(after_post)),
                     "seed's design: first 10,000-row batch written", ms(median(peer)),
                     ratio(median(after_post), median(peer)),
                     f"{a.ttfb_rounds} rounds; gateway min–max {min(after_post):.1f}–{max(after_post):.1f} ms, "
                     f"counting the POST {median(with_post):.1f} ms; Python {min(peer):.1f}–{max(peer):.1f} ms "
                     f"(connection already open)", "each round a new run (no-cache), deleted after its first byte")

    def section_memory(self):
        a = self.args
        self.stop_shared()  # a process of its own for each load, so VmHWM starts afresh
        # CACHE_TTL=0: the live readers' POST (no no-cache header) starts a new run.
        env = {"CACHE_TTL": "0"}
        py = sys.executable
        export_id = None
        gw = Gateway(self, env, name="memory").start()
        try:
            idle = gw.vm() / 1024
            limit = a.timeout + 60
            cmd = [py, str(ROOT / "loadtest" / "live_readers.py"), "--base", gw.base, "--pid", str(gw.proc.pid),
                   "--readers", "12", "--slow", "4", "--slow-rate", "30m", "--query", "", "--timeout", str(a.timeout)]
            log("memory: 12 live readers of one full export (4 limited to 30 MiB/s)")
            code, out, err = self.children.run(cmd, limit, check=False)
            found = re.search(r"^export ([0-9a-fA-F-]{36}):", out, re.M)
            if found:
                export_id = found.group(1)
                self.created.add(export_id)
            hwm = gw.vm() / 1024
            ttfbs = [int(x) for x in re.findall(r"first byte (\d+) ms", out)]
            ok = code == 0
            if not ok:
                self.failures.append(f"live_readers.py exited {code}: {(out + err).strip()[-1500:]}")
            self.add("peak memory (VmHWM), 12 live readers of one full export, 4 at 30 MiB/s", mib(hwm),
                     "seed's promise", "150 MB", ratio(hwm * 2**20, SEED_MEMORY_PROMISE),
                     f"{mib(idle)} after start; first bytes {min(ttfbs, default=0)}–{max(ttfbs, default=0)} ms",
                     "every reader got the finished file (size, SHA-256)" if ok else "**readers differ** (see log)")
            if export_id is None or not ok:
                return
            gw.stop(delete_leftovers=False)  # the finished export stays for the slow readers
            for clients, rate in ((100, "256k"), (1000, "64k")):
                gw = Gateway(self, env, name="memory").start()
                idle = gw.vm() / 1024
                cmd = [py, str(ROOT / "loadtest" / "slow_downloads.py"), "--base", gw.base, "--pid", str(gw.proc.pid),
                       "--export", export_id, "--clients", str(clients), "--rate", rate,
                       "--seconds", str(a.slow_seconds), "--settle", str(a.settle)]
                log(f"memory: {clients} slow readers at {rate}/s for {a.slow_seconds} s of the finished file")
                code, out, err = self.children.run(cmd, a.slow_seconds + a.settle + 120, check=False)
                hwm = gw.vm() / 1024
                try:
                    summary = json.loads(out)
                except ValueError:
                    raise BenchError(f"slow_downloads.py printed no JSON (exit {code}): {(out + err).strip()[-1500:]}")
                ok = code == 0
                if not ok:
                    self.failures.append(f"slow_downloads.py with {clients} clients: {summary['errors']} errors, {summary['cut']} cut")
                self.add(f"peak memory (VmHWM), {clients} slow readers ({rate}/s each, {a.slow_seconds:g} s) of the finished file",
                         mib(hwm), "seed's promise", "150 MB", ratio(hwm * 2**20, SEED_MEMORY_PROMISE),
                         f"{mib(idle)} after start; {mib(summary['after_settle']['rss_mib'])} resident {a.settle:g} s after; "
                         f"descriptors {summary['before']['fds']} → {summary['peak']['fds']} → {summary['after_settle']['fds']}; "
                         f"{summary['received_mib']:,} MiB delivered",
                         "no client cut or refused" if ok else f"**{summary['errors']} errors, {summary['cut']} cut**")
                if clients != 1000:
                    gw.stop(delete_leftovers=False)
        finally:
            gw.stop()  # deletes the export

    # -- the whole run ---------------------------------------------------------

    def machine_facts(self):
        f = self.facts
        f["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        f["nproc"] = os.cpu_count()
        try:
            f["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        cpu = "unknown"
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        f["cpu"] = cpu
        with open("/proc/meminfo") as fh:
            total = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
        f["memory"] = f"{total / 2**20:.1f} GiB"
        f["load_start"] = os.getloadavg()
        f["pg_version"] = self.db.psql("SHOW server_version")
        f["users_rows"] = int(self.db.psql("SELECT count(*) FROM users"))
        try:
            out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10).stderr
            f["nginx_version"] = out.strip().split("/")[-1]
        except (OSError, subprocess.SubprocessError):
            f["nginx_version"] = ""
        try:
            commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = ""
        f["commit"] = commit or "unknown"

    def journal_check(self):
        """Exports of the database's journal that a gateway with a fresh cache
        would run again at start (queued, running, or completed with the file
        elsewhere): they would load the machine while it is measured."""
        others = int(self.db.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name LIKE 'gateway:%'"))
        if others:
            self.facts["other_gateway"] = others
            log(f"warning: another gateway is connected to this database ({others} connections): it shares the "
                "journal with the benchmark's gateway, and its load is measured too")
        if self.db.psql("SELECT to_regclass('gateway.exports') IS NOT NULL") != "t":
            return 0
        ttl = int(self.gateway_env.get("EXPORT_TTL", "86400"))
        n = int(self.db.psql(
            "SELECT count(DISTINCT run_id) FROM gateway.exports WHERE expired_at IS NULL AND cancelled_at IS NULL "
            f"AND status <> 'failed' AND created_at > now() - make_interval(secs => {ttl})"))
        self.facts["journal_runs"] = n
        if n and not self.args.rerun_journal:
            raise BenchError(
                f"the gateway journal of this database (gateway.exports) holds {n} live export run(s) whose files are in "
                "another gateway's cache: the benchmark's gateway, with a cache folder of its own, would run them all "
                "again at start, writing to that journal and loading the machine. Use a database no other gateway "
                "uses, or pass --rerun-journal to let them run (the benchmark waits until they are done before measuring).")
        return n

    def run(self):
        a = self.args
        Path(a.work_dir).mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="bench-work-", dir=a.work_dir)).resolve()
        self.cache_dir = self.work / "cache"
        log(f"working folder {self.work}")
        self.machine_facts()
        self.journal_check()
        for section in a.sections:
            log(f"section {section}")
            getattr(self, "section_" + section)()
        self.stop_shared()

    def cleanup(self):
        try:
            self.stop_shared()
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            log(f"stopping the gateway: {e}")
        self.children.stop_all()
        if self.created:
            log(f"exports left in the journal (no gateway ran to delete them): {', '.join(sorted(self.created))}")
        if not self.args.keep_work and getattr(self, "work", None):
            shutil.rmtree(self.work, ignore_errors=True)

    def markdown(self, error=None):
        f, a = self.facts, self.args
        load_end = os.getloadavg()
        lines = [
            "### Latest figures", "",
            f"`scripts/bench.sh{' --quick' if a.quick else ''} --runs {a.runs}"
            f"{' --only ' + ','.join(a.sections) if list(a.sections) != list(SECTIONS) else ''}` on {f.get('date')}.",
            "",
            f"- machine: `nproc` {f.get('nproc')}, {f.get('cpu')}, {f.get('memory')} of memory; load average "
            f"{fmt_load(f.get('load_start'))} at the start, {fmt_load(load_end)} at the end",
            f"- PostgreSQL {f.get('pg_version')}, `users` has {f.get('users_rows', 0):,} rows"
            + (f"; the full export is {f['full_bytes']:,} bytes" if "full_bytes" in f else ""),
            f"- gateway `{self.binary}` (worktree at {f.get('commit')})"
            + (f", with {' '.join(f'{k}={v}' for k, v in self.gateway_env.items())}" if self.gateway_env else "")
            + "; medians of interleaved runs (gateway, peer, gateway, peer, …)",
            f"- settings: {a.runs} run(s) per figure, {a.ttfb_rounds} TTFB rounds, slow readers for {a.slow_seconds:g} s "
            f"and {a.settle:g} s to settle, {'no warm-up' if a.no_warmup else 'one unmeasured psql export of each case first'}",
        ]
        if f.get("other_gateway"):
            lines.append(f"- **another gateway was connected to this database** at the start ({f['other_gateway']} "
                         "connections): its work, if any, ran during these measurements")
        if f.get("journal_runs"):
            lines.append(f"- {f['journal_runs']} run(s) of the database's journal ran again at the gateway's first start (waited for before measuring)")
        lines += ["", "| what | gateway | peer | peer's figure | gateway / peer | runs (gateway / peer) | check |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in self.rows:
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
        if self.failures:
            lines += ["", "**FAILED:**", ""] + [f"- {x}" for x in self.failures]
        if error:
            lines += ["", f"**Stopped early:** {error}"]
        return "\n".join(lines) + "\n"


def secs(v):
    return "–" if v is None else f"{v:.3f} s" if v < 10 else f"{v:.2f} s"


def ms(v):
    return "–" if v is None else f"{v:.1f} ms"


def mib(v):
    return f"{v:.1f} MiB"


def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}×"


def fmt_list(values, digits=3):
    return ", ".join(f"{v:.{digits}f}" for v in values)


def runs_text(g, p, unit):
    return f"{fmt_list(g)} / {fmt_list(p)} {unit}"


def fmt_load(load):
    return " ".join(f"{x:.2f}" for x in load) if load else "?"


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                    help="libpq URI of a database that has the users table (default: $DATABASE_URL); "
                         "its password is passed to psql in PGPASSWORD, never on a command line")
    ap.add_argument("--gateway", default=str(ROOT / ".build" / "release" / "gateway"),
                    help="the gateway binary (default .build/release/gateway, built when missing)")
    ap.add_argument("--runs", type=int, help="interleaved runs per figure (default 3; 1 with --quick)")
    ap.add_argument("--only", help="one section or a comma list: " + ", ".join(SECTIONS))
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 run, 5 TTFB rounds, 5 s slow readers, no warm-up")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="Markdown file for the table (default BENCHMARKS.md)")
    ap.add_argument("--ttfb-rounds", type=int, help="rounds per TTFB figure (default 15; 5 with --quick)")
    ap.add_argument("--slow-seconds", type=float, help="seconds the slow readers read (default 20; 5 with --quick)")
    ap.add_argument("--settle", type=float, help="seconds waited after the slow readers (default 12; 3 with --quick)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds any one export or step may take (default 1800)")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for the gateway (e.g. FAST_START=false); may repeat")
    ap.add_argument("--rerun-journal", action="store_true",
                    help="start even when the database's export journal holds runs a fresh cache would run again")
    ap.add_argument("--no-warmup", action="store_true", help="skip the unmeasured psql export of each case")
    ap.add_argument("--work-dir", default=str(ROOT / ".build"), help="where the working folder (files, cache) goes")
    ap.add_argument("--keep-work", action="store_true", help="keep the working folder (logs) afterwards")
    a = ap.parse_args(argv)
    if not a.database_url:
        ap.error("--database-url (or DATABASE_URL) is required")
    a.sections = SECTIONS if not a.only else [s.strip() for s in a.only.split(",") if s.strip()]
    for s in a.sections:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}; sections: {', '.join(SECTIONS)}")
    a.runs = a.runs or (1 if a.quick else 3)
    a.ttfb_rounds = a.ttfb_rounds or (5 if a.quick else 15)
    a.slow_seconds = a.slow_seconds or (5 if a.quick else 20)
    a.settle = a.settle if a.settle is not None else (3 if a.quick else 12)
    a.no_warmup = a.no_warmup or a.quick
    if a.runs < 1 or a.ttfb_rounds < 1:
        ap.error("--runs and --ttfb-rounds must be at least 1")
    for kv in a.gateway_env:
        if "=" not in kv:
            ap.error(f"--gateway-env wants KEY=VALUE, got {kv!r}")
    return a


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv):
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    bench = Bench(args)
    binary = Path(args.gateway)
    if not binary.exists():
        if binary.resolve() != (ROOT / ".build" / "release" / "gateway").resolve():
            print(f"no gateway binary at {binary}", file=sys.stderr)
            return 2
        log("building the gateway: swift build -c release --product gateway")
        bench.children.run(["swift", "build", "-c", "release", "--product", "gateway"], 3600, cwd=ROOT)
    error = None
    try:
        bench.run()
    except BenchError as e:
        error = str(e)
    except Interrupted as e:
        error = f"interrupted by {e}"
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.cleanup()
    table = bench.markdown(error)
    print(table)
    if bench.rows:
        # A run that stopped or failed does not replace a good table.
        out = args.out if not error and not bench.failures else args.out + ".partial"
        Path(out).write_text(table)
        log(f"table written to {out}")
    if error:
        log(f"stopped: {error}")
        return 1
    if bench.failures:
        log("FAILED: " + "; ".join(bench.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
