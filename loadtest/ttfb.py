#!/usr/bin/env python3
"""Time to first byte of a live download, measured from the POST's answer.

Each round POSTs a new export (Cache-Control: no-cache, so it is a new run,
not a reused file), then GETs its download at once and times the arrival of
the first body byte. Prints every round and the median, in milliseconds.

    python3 loadtest/ttfb.py --base http://127.0.0.1:8080 --rounds 21 --query 'country_code=US'
"""
import argparse
import http.client
import json
import statistics
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="http://127.0.0.1:8080")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--query", default="", help="export query string")
    args = ap.parse_args()
    u = urllib.parse.urlsplit(args.base)
    times = []
    for _ in range(args.rounds):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("POST", "/exports/csv?" + args.query, headers={"Cache-Control": "no-cache"})
        resp = conn.getresponse()
        export_id = json.loads(resp.read())["exportId"]
        t0 = time.perf_counter()
        conn.request("GET", f"/exports/{export_id}/download")
        resp = conn.getresponse()
        first = resp.read1(1) if hasattr(resp, "read1") else resp.read(1)
        t1 = time.perf_counter()
        assert first, "no body byte"
        conn.close()  # the rest is not needed; the export goes on
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.request("DELETE", f"/exports/{export_id}")
        conn.getresponse().read()
        conn.close()
        times.append((t1 - t0) * 1000)
    print("ms:", " ".join(f"{t:.1f}" for t in times))
    print(f"median {statistics.median(times):.1f} ms, min {min(times):.1f}, max {max(times):.1f} over {len(times)} rounds")


if __name__ == "__main__":
    main()
