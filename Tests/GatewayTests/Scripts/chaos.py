"""Three gateway processes on one database and one cache folder, many
clients, and a chaos thread that kills (`kill -9`, then a restart) or
freezes (SIGSTOP for longer than the lease, then SIGCONT) one of them every
few seconds; afterwards every acknowledgement must hold on every gateway.

usage: chaos.py --binary PATH --database-url URL --cache-dir DIR --seconds N
                --threads T --seed S [--kill-every SECONDS] [--lease SECONDS]

The database must hold a seeded `users` table. Each gateway runs from PATH
with INSTANCE_ID chaos1..chaos3 (kept across its restarts), PORT=0 (the port
read from its "listening on 127.0.0.1:PORT" line), SEED=false and
LEASE_SECONDS; its stderr is appended to a log file in a temporary folder.

For SECONDS, T client threads create exports (POST /exports/csv, a query from
a small set, sometimes with Cache-Control: no-cache) on a random live
gateway, then cancel some (DELETE while queued or running: 200, cancelled),
delete some once they ended (DELETE: 204), follow some live (a streamed
GET /exports/{id}/download; whether it ended cleanly, with its final chunk
or its whole Content-Length, or was aborted, and the bytes' SHA-256), ask
the status of some, leave the rest. One request in ten picks its gateway
blind (killed or frozen ones too, as a balancer that has not noticed yet).
A refused connection, a 503 or a 429 changes nothing and is retried (on
another gateway); a POST or DELETE whose connection broke after it was
sent has an unknown outcome: it is counted, and its export (if any) is left
out of the strict checks. The ledger keeps every acknowledged operation:
created (202, its id and query), cancelled (200), deleted (204).

Afterwards: the chaos stops, every gateway is stopped (SIGTERM) and started
again, and once every created export that was not cancelled or deleted is
completed (at most 120 s), the checks:
  - created: `completed` on every gateway, `sha256`/`sizeBytes` those of
    psql's `\\copy (SELECT <columns> FROM users WHERE <filters> ORDER BY id)
    TO STDOUT WITH (FORMAT csv, HEADER true)` in UTC, and its download (in
    full while time allows, else its last 64 KiB by a Range) the same bytes;
  - cancelled (and not deleted afterwards): `cancelled` on every gateway;
  - deleted: 404 on every gateway;
  - every live download that ended cleanly has psql's bytes;
  - every objects/<sha256>.csv in the cache folder has that SHA-256;
  - no answer was a 5xx other than a 503, no acknowledged export was ever
    answered 404 or `failed`, no gateway exited by itself or crashed (its
    log has no "Fatal error", no signal, no backtrace), SIGTERM exits 0.
It prints a one-line JSON summary on stdout (details of failures on
stderr) and exits 1 on any failure. Everything ends within SECONDS + 180 s;
every child process is killed on exit.
"""
import argparse
import atexit
import ctypes
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ALL = ["id", "email", "full_name", "country_code", "subscription_tier",
       "lifetime_value", "created_at", "last_login_at", "notes"]

# (query string, columns, countries, tiers, min_ltv): a few distinct requests,
# so that many exports join one run, and a few large ones that run long
# enough to be caught by a kill or a freeze.
QUERIES = [
    ("country_code=JP", ALL, ["JP"], [], None),
    ("country_code=DE,FR&columns=id,email,country_code", ["id", "email", "country_code"], ["DE", "FR"], [], None),
    ("country_code=us", ALL, ["US"], [], None),
    ("subscription_tier=enterprise", ALL, [], ["enterprise"], None),
    ("subscription_tier=pro,basic&min_ltv=5000&columns=id,full_name,lifetime_value,notes",
     ["id", "full_name", "lifetime_value", "notes"], [], ["pro", "basic"], "5000"),
    ("min_ltv=9000", ALL, [], [], "9000"),
    ("min_ltv=0&columns=notes,full_name,id", ["notes", "full_name", "id"], [], [], "0"),
    ("columns=id,email,created_at,last_login_at", ["id", "email", "created_at", "last_login_at"], [], [], None),
    ("country_code=GB,BR&subscription_tier=free", ALL, ["GB", "BR"], ["free"], None),
    ("", ALL, [], [], None),
]
CRASH_MARKS = ["Fatal error", "SIGSEGV", "SIGBUS", "SIGILL", "SIGABRT", "Segmentation fault",
               "Program crashed", "Current stack trace", "Illegal instruction"]
REQUEST_TIMEOUT = 20


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--kill-every", type=float, default=4.0)
    p.add_argument("--lease", type=int, default=3)
    p.add_argument("--keep-logs", action="store_true", help="keep the log folder even when everything held")
    return p.parse_args()


args = parse_args()
START = time.time()
# The checks end by then; stopping the gateways (at most 15 s) comes after.
HARD_DEADLINE = START + args.seconds + 160
log_dir = tempfile.mkdtemp(prefix="chaos-logs-")
lock = threading.Lock()
failures = []          # strings; any means exit 1
events = []            # (t, what): the chaos timeline, for the evidence
counters = {"requests": 0, "retries": 0, "refusals429": 0, "answers503": 0,
            "unknownPost": 0, "unknownDelete": 0, "kills": 0, "freezes": 0, "restarts": 0,
            "liveClean": 0, "liveAborted": 0, "liveStatic": 0, "statusChecks": 0,
            "ackCreates": 0, "ackCancels": 0, "ackDeletes": 0}
ledger = {}            # id -> {"query": index, "state": created|cancelled|deleted|unknown, "history": [...]}
live_downloads = []    # {"id", "query", "gateway", "clean", "bytes", "sha", "chunked"}


def now():
    return round(time.time() - START, 3)


def fail(what):
    with lock:
        failures.append("%.1fs %s" % (now(), what))


def count(key, n=1):
    with lock:
        counters[key] += n


def event(what):
    with lock:
        events.append((now(), what))


# --- gateways -----------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent():
    # PR_SET_PDEATHSIG = 1: SIGKILL when the thread that started it (always
    # the main thread here) ends, even if this script is killed itself.
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Gateway:
    def __init__(self, index):
        self.name = "chaos%d" % index
        self.log_path = os.path.join(log_dir, self.name + ".log")
        self.proc = None
        self.port = None
        self.state = "down"      # up, down, frozen
        self.expected_exit = True

    def env(self):
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": args.database_url, "HOST": "127.0.0.1", "PORT": "0",
            "CACHE_DIR": args.cache_dir, "INSTANCE_ID": self.name, "SEED": "false",
            "LEASE_SECONDS": str(args.lease), "MAX_CONCURRENT_EXPORTS": "2",
            "EXPORT_PARALLELISM": "2", "LOG_LEVEL": "info", "SHUTDOWN_GRACE": "5",
        })
        return env

    def start(self, timeout=30):
        with open(self.log_path, "ab") as log:
            log.write(("\n==== chaos.py: start %s at %.3f s ====\n" % (self.name, now())).encode())
            offset = log.tell()
            self.proc = subprocess.Popen([args.binary], env=self.env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, preexec_fn=die_with_parent, close_fds=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail("%s exited with %s at start (log %s)" % (self.name, self.proc.returncode, self.log_path))
                return False
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", log.read())
            if m:
                with lock:
                    self.port = int(m.group(1))
                    self.state = "up"
                    self.expected_exit = False
                count("restarts")
                event("%s up on %d" % (self.name, self.port))
                return True
            time.sleep(0.05)
        fail("%s did not listen within %d s" % (self.name, timeout))
        return False

    def exited_by_itself(self):
        return self.proc is not None and not self.expected_exit and self.proc.poll() is not None

    def kill(self):
        with lock:
            self.state = "down"
            self.expected_exit = True
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def freeze(self):
        with lock:
            self.state = "frozen"
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        with lock:
            if self.state == "frozen":
                self.state = "up"

    def terminate(self):
        """SIGTERM (and SIGCONT, should it be frozen); see stop_all."""
        with lock:
            self.state = "down"
            self.expected_exit = True
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)

    def await_exit(self, deadline):
        """A gateway must exit 0 on SIGTERM; SIGKILL once the deadline passes."""
        if not self.proc:
            return
        try:
            code = self.proc.wait(max(0.1, deadline - time.time()))
            if code != 0:
                fail("%s exited %s on SIGTERM (log %s)" % (self.name, code, self.log_path))
        except subprocess.TimeoutExpired:
            fail("%s did not exit within 15 s of SIGTERM" % self.name)
            self.proc.kill()
            self.proc.wait()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.kill()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass


gateways = [Gateway(i) for i in (1, 2, 3)]


def stop_all():
    """SIGTERM to every gateway at once (SHUTDOWN_GRACE is 5 s), then 15 s to exit."""
    for g in gateways:
        if g.exited_by_itself():
            fail("%s exited by itself with %s (log %s)" % (g.name, g.proc.returncode, g.log_path))
        g.terminate()
    deadline = time.time() + 15
    for g in gateways:
        g.await_exit(deadline)


def cleanup():
    for g in gateways:
        g.cleanup()


atexit.register(cleanup)
class Interrupted(Exception):
    pass


def interrupted(*_):
    raise Interrupted("SIGTERM")


# A SIGTERM (a test's time limit) ends the run with its summary, gateways killed.
signal.signal(signal.SIGTERM, interrupted)


def live(exclude=None, blind=False):
    """The gateways a client may pick: those up; blind, any that has had a
    port (as a balancer that has not noticed a kill or a freeze yet)."""
    with lock:
        return [(g.name, g.port) for g in gateways
                if (g.state == "up" or (blind and g.port is not None)) and g.name != exclude]


# --- HTTP -----------------------------------------------------------------

class Unknown(Exception):
    """Sent, and the connection broke before the answer: it may have happened."""


class NotSent(Exception):
    pass


def once(port, method, path, headers=None, timeout=REQUEST_TIMEOUT):
    """(status, headers, body); NotSent if no connection was made, Unknown
    if one was and no whole answer came."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        try:
            conn.connect()
        except OSError as e:
            raise NotSent(str(e))
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unknown("%s %s: %r" % (method, path, e))
        count("requests")
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), body
    finally:
        conn.close()


def call(rng, method, path, headers=None, deadline=None):
    """A request on a live gateway, retried elsewhere while nothing can have
    happened (no connection, 503, 429). Returns (gateway, status, headers,
    body), or raises Unknown (a POST or DELETE that may have happened; GETs
    are retried) or TimeoutError when the deadline passes."""
    deadline = deadline or HARD_DEADLINE - 10
    last = None
    while time.time() < deadline:
        # One pick in ten is blind: a refused connection is retried elsewhere,
        # a frozen gateway answers once thawed (or the request times out: unknown).
        blind = rng.random() < 0.1
        choices = live(exclude=last, blind=blind) or live()
        if not choices:
            time.sleep(0.1)
            continue
        name, port = rng.choice(choices)
        last = name
        try:
            status, h, body = once(port, method, path, headers)
        except NotSent:
            count("retries")
            time.sleep(0.05)
            continue
        except Unknown:
            if method in ("POST", "DELETE"):
                raise
            count("retries")
            time.sleep(0.05)
            continue
        if status == 503:
            count("answers503")
            count("retries")
            time.sleep(0.1 + rng.random() * 0.3)
            continue
        if status == 429:
            count("refusals429")
            time.sleep(0.2 + rng.random() * 0.5)
            continue
        if status >= 500:
            fail("%s %s on %s: %d %s" % (method, path, name, status, body[:300]))
        return name, status, h, body
    raise TimeoutError("%s %s: no answer before the deadline" % (method, path))


def history(export_id, what):
    with lock:
        entry = ledger.get(export_id)
        if entry is not None:
            entry["history"].append((now(), what))


def follow(rng, export_id, query_index, stop_at):
    """A streamed download: clean or aborted, and the bytes' hash."""
    choices = live()
    if not choices:
        return
    name, port = rng.choice(choices)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    digest, size, clean, chunked, hung_up = hashlib.sha256(), 0, False, None, False
    try:
        try:
            conn.connect()
            conn.request("GET", "/exports/%s/download" % export_id)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            return
        count("requests")
        status = resp.status
        if status != 200:
            resp.read()
            if status in (503,):
                return
            if status >= 500 or status in (404, 409, 410):
                fail("live download of %s (never deleted) on %s: %d" % (export_id, name, status))
            return
        chunked = resp.getheader("Transfer-Encoding", "").lower() == "chunked"
        # http.client raises on a chunked body cut short, but a body with a
        # Content-Length cut short just ends: its length says.
        length = resp.getheader("Content-Length")
        try:
            while True:
                if time.time() > stop_at:
                    hung_up = True     # we hung up: neither clean nor aborted
                    break
                block = resp.read(256 * 1024)
                if not block:
                    clean = chunked or (length is not None and size == int(length))
                    break
                digest.update(block)
                size += len(block)
        except (OSError, http.client.HTTPException, ValueError):
            clean = False
        if hung_up:
            return
        record = {"id": export_id, "query": query_index, "gateway": name, "clean": clean,
                  "bytes": size, "sha": digest.hexdigest(), "chunked": chunked, "t": now()}
        with lock:
            live_downloads.append(record)
            if not chunked:
                counters["liveStatic"] += 1
            elif clean:
                counters["liveClean"] += 1
            else:
                counters["liveAborted"] += 1
        history(export_id, "download on %s: %s %d bytes%s" % (name, "clean" if clean else "aborted", size, "" if chunked else " (static)"))
    finally:
        conn.close()


def client(index, stop_at):
    rng = random.Random(args.seed * 1000 + index)
    while time.time() < stop_at:
        qi = rng.randrange(len(QUERIES))
        query = QUERIES[qi][0]
        headers = {"Cache-Control": "no-cache"} if rng.random() < 0.12 else {}
        try:
            gw, status, _, body = call(rng, "POST", "/exports/csv" + ("?" + query if query else ""), headers, deadline=stop_at)
        except Unknown:
            count("unknownPost")
            continue
        except TimeoutError:
            break
        if status != 202:
            fail("POST %s on %s: %d %s" % (query, gw, status, body[:300]))
            continue
        answer = json.loads(body)
        export_id = answer["exportId"]
        count("ackCreates")
        with lock:
            ledger[export_id] = {"query": qi, "state": "created", "history": [(now(), "created on %s (%s)%s" % (gw, answer.get("status"), " no-cache" if headers else ""))]}
        time.sleep(rng.random() * 0.05)
        action = rng.choices(["cancel", "follow", "delete", "status", "leave"], [25, 25, 20, 15, 15])[0]
        try:
            if action == "cancel":
                cancel(rng, export_id, stop_at)
            elif action == "follow":
                follow(rng, export_id, qi, stop_at + 20)
            elif action == "delete":
                wait_end = min(stop_at, time.time() + 15)
                while time.time() < wait_end:
                    state = status_of(rng, export_id, stop_at)
                    if state not in ("queued", "running"):
                        break
                    time.sleep(0.2)
                cancel(rng, export_id, stop_at)
            elif action == "status":
                status_of(rng, export_id, stop_at)
        except TimeoutError:
            break


def status_of(rng, export_id, deadline):
    _, status, _, body = call(rng, "GET", "/exports/%s/status" % export_id, deadline=deadline)
    count("statusChecks")
    with lock:
        state = ledger[export_id]["state"]
    if status == 404 and state == "created":
        fail("status of acknowledged %s: 404" % export_id)
        return None
    if status != 200:
        return None
    s = json.loads(body).get("status")
    if state == "created" and s not in ("queued", "running", "completed"):
        fail("status of acknowledged %s, never cancelled: %s" % (export_id, s))
    return s


def cancel(rng, export_id, deadline):
    """DELETE, then maybe again: each answer goes into the ledger."""
    for _ in range(2):
        try:
            gw, status, _, body = call(rng, "DELETE", "/exports/" + export_id, deadline=deadline)
        except Unknown as e:
            count("unknownDelete")
            with lock:
                ledger[export_id]["state"] = "unknown"
            history(export_id, "DELETE unknown: %s" % e)
            return
        if status == 200:
            s = json.loads(body).get("status")
            if s != "cancelled":
                fail("DELETE %s on %s: 200 with status %s" % (export_id, gw, s))
            with lock:
                if ledger[export_id]["state"] != "unknown":
                    ledger[export_id]["state"] = "cancelled"
            count("ackCancels")
            history(export_id, "cancelled on %s" % gw)
        elif status == 204:
            with lock:
                if ledger[export_id]["state"] != "unknown":
                    ledger[export_id]["state"] = "deleted"
            count("ackDeletes")
            history(export_id, "deleted on %s" % gw)
            return
        else:
            fail("DELETE %s on %s: unexpected %d %s" % (export_id, gw, status, body[:200]))
            return
        # Cancelled: now and then deleted as well (the second DELETE: 204).
        if rng.random() > 0.3:
            return


# --- chaos ----------------------------------------------------------------

def chaos(stop_at):
    """Runs on the main thread (the gateways' parent: see die_with_parent)."""
    rng = random.Random(args.seed)
    pending = []        # (due, action, gateway)
    next_event = time.time() + args.kill_every * (0.5 + rng.random() * 0.5)
    while time.time() < stop_at:
        t = time.time()
        for item in sorted(pending, key=lambda p: p[0]):
            due, action, g = item
            if due <= t:
                pending.remove(item)
                if action == "restart":
                    g.start()
                else:
                    g.thaw()
                    event("%s SIGCONT" % g.name)
        for g in gateways:
            if g.exited_by_itself():
                fail("%s exited by itself with %s (log %s)" % (g.name, g.proc.returncode, g.log_path))
                g.expected_exit = True
                with lock:
                    g.state = "down"
                pending.append((time.time() + 0.5, "restart", g))
        if t >= next_event:
            next_event = t + args.kill_every * (0.75 + rng.random() * 0.5)
            with lock:
                up = [g for g in gateways if g.state == "up"]
            # Someone stays up and answering.
            if len(up) >= 2:
                g = rng.choice(up)
                if rng.random() < 0.5:
                    g.kill()
                    count("kills")
                    event("%s kill -9" % g.name)
                    pending.append((time.time() + 0.5 + rng.random() * 1.5, "restart", g))
                else:
                    g.freeze()
                    count("freezes")
                    event("%s SIGSTOP" % g.name)
                    pending.append((time.time() + args.lease + 2, "thaw", g))
        time.sleep(0.05)
    # The end of the chaos: everything pending happens now.
    for _, action, g in sorted(pending, key=lambda p: p[0]):
        if action == "restart":
            g.start()
        else:
            g.thaw()
            event("%s SIGCONT" % g.name)


# --- the oracle -------------------------------------------------------------

def psql_copy(qi):
    _, columns, countries, tiers, min_ltv = QUERIES[qi]
    where = []
    if countries:
        where.append("country_code IN (%s)" % ", ".join("'%s'" % c for c in countries))
    if tiers:
        where.append("subscription_tier IN (%s)" % ", ".join("'%s'" % t for t in tiers))
    if min_ltv is not None:
        where.append("lifetime_value >= '%s'::numeric" % min_ltv)
    select = "SELECT %s FROM users%s ORDER BY id" % (", ".join(columns), " WHERE " + " AND ".join(where) if where else "")
    command = "\\copy (%s) TO STDOUT WITH (FORMAT csv, HEADER true)" % select
    psql = os.environ.get("PSQL") or shutil.which("psql") or "psql"
    env = dict(os.environ, TZ="UTC", PGTZ="UTC")
    out = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", args.database_url, "-c", command],
                         env=env, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("psql: %s" % out.stderr.decode(errors="replace"))
    data = out.stdout
    return {"sha": hashlib.sha256(data).hexdigest(), "size": len(data), "tail": data[-65536:]}


# --- after the chaos --------------------------------------------------------

def get_on(g, path, headers=None, attempts=20):
    """A GET on that very gateway, retried through 503s and broken connections."""
    for _ in range(attempts):
        if time.time() > HARD_DEADLINE:
            return None
        try:
            return once(g.port, "GET", path, headers, timeout=10)
        except (NotSent, Unknown):
            time.sleep(0.2)
            continue
    return None


def answered(g, path, headers=None):
    for _ in range(40):
        r = get_on(g, path, headers)
        if r is None or r[0] != 503:
            return r
        time.sleep(0.25)
    return r


def full_download(g, export_id):
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=REQUEST_TIMEOUT)
    try:
        conn.request("GET", "/exports/%s/download" % export_id)
        resp = conn.getresponse()
        digest, size = hashlib.sha256(), 0
        while True:
            block = resp.read(1 << 20)
            if not block:
                break
            digest.update(block)
            size += len(block)
        return resp.status, resp.getheader("ETag"), digest.hexdigest(), size
    except (OSError, http.client.HTTPException) as e:
        return None, None, repr(e), 0
    finally:
        conn.close()


def out_of_time(what):
    """True past the deadline, said once as a failure: what was left unchecked."""
    if time.time() <= HARD_DEADLINE:
        return False
    with lock:
        said = any("ran out of time" in f for f in failures)
    if not said:
        fail("ran out of time before checking %s" % what)
    return True


def verify(oracle, summary):
    with lock:
        entries = dict((i, dict(e)) for i, e in ledger.items())
    created = [i for i, e in entries.items() if e["state"] == "created"]
    cancelled = [i for i, e in entries.items() if e["state"] == "cancelled"]
    deleted = [i for i, e in entries.items() if e["state"] == "deleted"]
    unknown = [i for i, e in entries.items() if e["state"] == "unknown"]

    # Every created export completes (bounded).
    pending = set(created)
    wait_until = min(time.time() + 120, HARD_DEADLINE - 40)
    rr = 0
    while pending and time.time() < wait_until:
        for export_id in list(pending):
            g = gateways[rr % 3]
            rr += 1
            r = get_on(g, "/exports/%s/status" % export_id, attempts=3)
            if r and r[0] == 200 and json.loads(r[2]).get("status") in ("completed", "failed", "cancelled"):
                pending.discard(export_id)
        if pending:
            time.sleep(1)
    summary["waitedForCompletion"] = round(time.time() - summary["_checksFrom"], 1)
    for export_id in sorted(pending):
        fail("created %s (query %r) not ended after the wait; history %s" % (export_id, QUERIES[entries[export_id]["query"]][0], entries[export_id]["history"]))

    # Status on every gateway.
    for export_id in created:
        if out_of_time("the created exports"):
            break
        expected = oracle[entries[export_id]["query"]]
        for g in gateways:
            r = answered(g, "/exports/%s/status" % export_id)
            if r is None or r[0] != 200:
                fail("created %s: status on %s: %s; history %s" % (export_id, g.name, r and (r[0], r[2][:200]), entries[export_id]["history"]))
                continue
            s = json.loads(r[2])
            if s.get("status") != "completed":
                fail("created %s: %s on %s (error %r); history %s" % (export_id, s.get("status"), g.name, s.get("error"), entries[export_id]["history"]))
            elif s.get("sha256") != expected["sha"] or s.get("sizeBytes") != expected["size"]:
                fail("created %s (query %r): sha256 %s size %s on %s, psql %s %d" % (export_id, QUERIES[entries[export_id]["query"]][0], s.get("sha256"), s.get("sizeBytes"), g.name, expected["sha"], expected["size"]))
    for export_id in cancelled:
        if out_of_time("the cancelled exports"):
            break
        for g in gateways:
            r = answered(g, "/exports/%s/status" % export_id)
            state = r and r[0] == 200 and json.loads(r[2]).get("status")
            if state != "cancelled":
                fail("cancelled %s: on %s %s; history %s" % (export_id, g.name, r and (r[0], r[2][:200]), entries[export_id]["history"]))
    for export_id in deleted:
        if out_of_time("the deleted exports"):
            break
        for g in gateways:
            r = answered(g, "/exports/%s/status" % export_id)
            if r is None or r[0] != 404:
                fail("deleted %s: on %s %s; history %s" % (export_id, g.name, r and (r[0], r[2][:200]), entries[export_id]["history"]))
    outcomes = {}
    for export_id in unknown:
        if out_of_time("the exports of unknown DELETEs"):
            break
        r = answered(gateways[0], "/exports/%s/status" % export_id)
        key = "404" if r and r[0] == 404 else (json.loads(r[2]).get("status") if r and r[0] == 200 else str(r and r[0]))
        outcomes[key] = outcomes.get(key, 0) + 1
        if key not in ("404", "cancelled", "completed"):
            fail("after a DELETE of unknown outcome, %s is %s" % (export_id, key))
    summary["unknownDeleteOutcomes"] = outcomes

    for d in live_downloads:
        expected = oracle[d["query"]]
        if d["clean"] and (d["sha"] != expected["sha"] or d["bytes"] != expected["size"]):
            fail("live download of %s on %s ended cleanly at %.1fs with %d bytes sha %s, psql %d %s; history %s" % (d["id"], d["gateway"], d["t"], d["bytes"], d["sha"], expected["size"], expected["sha"], entries.get(d["id"], {}).get("history")))

    # Downloads: whole while time allows, round robin over the gateways,
    # then the last 64 KiB by a Range.
    full, tails = 0, 0
    budget_end = HARD_DEADLINE - 15
    for n, export_id in enumerate(created):
        g = gateways[n % 3]
        expected = oracle[entries[export_id]["query"]]
        if time.time() < budget_end - 20:
            status, etag, sha, size = full_download(g, export_id)
            full += 1
            if status != 200 or sha != expected["sha"] or size != expected["size"] or etag != '"%s"' % expected["sha"]:
                fail("download of %s on %s: %s etag %s sha %s size %d, psql %s %d" % (export_id, g.name, status, etag, sha, size, expected["sha"], expected["size"]))
        elif time.time() < budget_end:
            r = get_on(g, "/exports/%s/download" % export_id, {"Range": "bytes=-65536"})
            tails += 1
            if r is None or r[0] != 206 or r[2] != expected["tail"]:
                fail("last 64 KiB of %s on %s: %s" % (export_id, g.name, r and r[0]))
        else:
            break
    summary["downloadsChecked"] = {"full": full, "tail": tails, "of": len(created)}

    return created, cancelled, deleted, unknown


def check_objects():
    """Nothing half-written is published: each objects/<sha256>.csv is whole."""
    folder = os.path.join(args.cache_dir, "objects")
    checked = 0
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not re.fullmatch(r"[0-9a-f]{64}\.csv", name):
            continue
        digest = hashlib.sha256()
        with open(os.path.join(folder, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        checked += 1
        if digest.hexdigest() + ".csv" != name:
            fail("objects/%s holds bytes whose SHA-256 is %s" % (name, digest.hexdigest()))
    return checked


def scan_logs():
    for g in gateways:
        try:
            text = open(g.log_path, "rb").read().decode(errors="replace")
        except OSError:
            continue
        for mark in CRASH_MARKS:
            if mark in text:
                i = text.index(mark)
                fail("%s log has %r: %s" % (g.name, mark, text[max(0, i - 300):i + 600]))


def evidence():
    """For each failure that names an export id: its lines in the logs."""
    ids = set()
    for f in failures:
        ids.update(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", f))
    for export_id in sorted(ids)[:5]:
        sys.stderr.write("---- %s in the logs ----\n" % export_id)
        for g in gateways:
            try:
                for line in open(g.log_path, "rb").read().decode(errors="replace").splitlines():
                    if export_id in line:
                        sys.stderr.write("%s: %s\n" % (g.name, line[:400]))
            except OSError:
                pass


def main():
    summary = {"seed": args.seed, "seconds": args.seconds, "threads": args.threads, "logs": log_dir}
    try:
        oracle = {}
        for qi in range(len(QUERIES)):
            oracle[qi] = psql_copy(qi)
        summary["psqlBytes"] = sum(o["size"] for o in oracle.values())
        for g in gateways:
            if not g.start():
                raise RuntimeError("%s did not start" % g.name)
        chaos_from = time.time()
        stop_at = chaos_from + args.seconds
        threads = [threading.Thread(target=client, args=(i, stop_at), daemon=True) for i in range(args.threads)]
        for t in threads:
            t.start()
        chaos(stop_at)
        for t in threads:
            t.join(max(0.1, stop_at + 30 - time.time()))
        if any(t.is_alive() for t in threads):
            fail("client threads still running 30 s after the end")
        # Every gateway stopped and started again: what is checked comes from
        # the journal and the shared folder, nothing from memory.
        event("restart of every gateway")
        stop_all()
        for g in gateways:
            g.start()
        for g in gateways:
            deadline = time.time() + 30
            while time.time() < deadline:
                r = get_on(g, "/health", attempts=1)
                if r and r[0] == 200:
                    break
                time.sleep(0.2)
            else:
                fail("%s: /health not 200 within 30 s of its restart" % g.name)
        summary["_checksFrom"] = time.time()
        created, cancelled, deleted, unknown = verify(oracle, summary)
        summary["finalStates"] = {"created": len(created), "cancelled": len(cancelled), "deleted": len(deleted), "unknown": len(unknown)}
        stop_all()
        summary["objectsChecked"] = check_objects()
    except Exception as e:  # noqa: BLE001: reported as a failure, never hidden
        fail("chaos.py: %r" % e)
    finally:
        cleanup()
    scan_logs()
    summary.pop("_checksFrom", None)
    summary.update(counters)
    summary["failures"] = [f[:400] for f in failures[:20]]
    summary["failureCount"] = len(failures)
    summary["elapsed"] = round(time.time() - START, 1)
    with lock, open(os.path.join(log_dir, "ledger.json"), "w") as f:
        json.dump({"ledger": ledger, "events": events, "liveDownloads": live_downloads}, f)
    if failures:
        sys.stderr.write("failures:\n%s\n" % "\n".join(failures[:200]))
        sys.stderr.write("chaos timeline: %s\n" % events)
        evidence()
    elif not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
        summary["logs"] = None
    print(json.dumps(summary, sort_keys=True))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
