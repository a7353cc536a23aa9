#!/usr/bin/env python3
"""Points K concurrent live readers at one export and checks what they got.

Starts an export (POST /exports/csv), immediately opens K downloads of it
(some rate-limited), hashes what each receives, and when the export is done
checks every reader got exactly the finished file (size and SHA-256 from the
status JSON). Meanwhile it samples the gateway's resident memory from /proc
and prints its peak (VmHWM). Exit status 0 only when every reader matched.

    python3 loadtest/live_readers.py --base http://127.0.0.1:8080 --pid $(pgrep -f .build/release/gateway) \
        --readers 12 --slow 4 --slow-rate 20m --query 'country_code=US'

Only loopback targets are sensible: it is a load generator.
"""
import argparse
import hashlib
import http.client
import json
import sys
import threading
import time
import urllib.parse


def parse_rate(text):
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024 ** 3}
    text = text.strip().lower()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def request(base, method, path, headers=None):
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    conn.request(method, path, headers=headers or {})
    return conn, conn.getresponse()


def proc_status(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    values[key] = int(rest.split()[0])  # kB
    except OSError:
        pass
    return values


class Reader(threading.Thread):
    def __init__(self, base, path, rate):
        super().__init__(daemon=True)
        self.base, self.path, self.rate = base, path, rate
        self.digest = hashlib.sha256()
        self.size = 0
        self.status = None
        self.error = None
        self.first_byte_at = None
        self.seconds = None

    def run(self):
        start = time.monotonic()
        try:
            conn, resp = request(self.base, "GET", self.path)
            self.status = resp.status
            while True:
                chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                if not chunk:
                    break
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic() - start
                self.digest.update(chunk)
                self.size += len(chunk)
                if self.rate:
                    # Sleep so that the average stays at the rate.
                    ahead = self.size / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            conn.close()
        except Exception as e:  # an aborted transfer lands here (IncompleteRead)
            self.error = repr(e)
        self.seconds = time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--pid", type=int, help="the gateway's PID, for its memory")
    ap.add_argument("--readers", type=int, default=12)
    ap.add_argument("--slow", type=int, default=3, help="how many of the readers are rate-limited")
    ap.add_argument("--slow-rate", default="20m", help="bytes per second for slow readers (k, m suffixes)")
    ap.add_argument("--query", default="", help="export query string, e.g. country_code=US")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = ap.parse_args()

    t0 = time.monotonic()
    conn, resp = request(args.base, "POST", "/exports/csv?" + args.query)
    body = json.loads(resp.read())
    conn.close()
    if resp.status != 202:
        print(f"POST answered {resp.status}: {body}", file=sys.stderr)
        return 2
    export_id = body["exportId"]
    path = f"/exports/{export_id}/download"
    rate = parse_rate(args.slow_rate)
    readers = [Reader(args.base, path, rate if i < args.slow else 0) for i in range(args.readers)]
    for r in readers:
        r.start()

    peak_rss = 0
    status = {}
    while any(r.is_alive() for r in readers) and time.monotonic() - t0 < args.timeout:
        if args.pid:
            peak_rss = max(peak_rss, proc_status(args.pid).get("VmRSS", 0))
        time.sleep(0.2)
    c, r = request(args.base, "GET", f"/exports/{export_id}/status")
    status = json.loads(r.read())
    c.close()

    ok = True
    print(f"export {export_id}: {status.get('status')}, {status.get('rowsWritten')} rows, "
          f"{status.get('sizeBytes')} bytes, export took "
          f"{status.get('completedAt')} - {status.get('startedAt')}")
    for i, r in enumerate(readers):
        match = (r.error is None and r.size == status.get("sizeBytes")
                 and r.digest.hexdigest() == status.get("sha256"))
        ok &= match
        kind = "slow" if i < args.slow else "fast"
        ttfb = f"{r.first_byte_at * 1000:.0f} ms" if r.first_byte_at is not None else "-"
        secs = f"{r.seconds:.1f}" if r.seconds is not None else "-"
        print(f"reader {i:2d} ({kind}): HTTP {r.status}, {r.size} bytes in {secs} s, "
              f"first byte {ttfb}, {'OK' if match else 'MISMATCH ' + str(r.error)}")
    if args.pid:
        hwm = proc_status(args.pid).get("VmHWM", 0)
        print(f"gateway pid {args.pid}: peak resident (VmHWM) {hwm / 1024:.1f} MiB, "
              f"highest VmRSS sampled during the run {peak_rss / 1024:.1f} MiB")
    print("all readers got the finished file" if ok else "SOME READERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
