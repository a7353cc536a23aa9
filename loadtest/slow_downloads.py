#!/usr/bin/env python3
"""N slow clients download one finished export at once; the gateway's memory
and descriptors are sampled before, during and after.

Each client opens its own connection (with a small receive buffer unless told
otherwise), asks for the
export's download and reads it at RATE bytes per second for SECONDS, then hangs
up. Meanwhile the gateway's resident set (VmRSS), its peak (VmHWM) and its open
descriptors are sampled from /proc/PID every half second; after the clients are
gone the script waits SETTLE seconds and samples again, to show that memory and
descriptors come back. Prints a JSON summary; exit status 0 unless a client got
an error status or had its download cut while it was still reading.

    python3 loadtest/slow_downloads.py --base http://127.0.0.1:8080 --pid PID \\
        --export EXPORT_ID --clients 1000 --rate 64k --seconds 30

Loopback only: it is a load generator.
"""
import argparse
import asyncio
import json
import socket
import time
import urllib.parse


def parse_rate(text):
    units = {"k": 1024, "m": 1024 * 1024}
    text = text.strip().lower()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def sample(pid):
    status = {}
    for line in open("/proc/%d/status" % pid):
        key, _, value = line.partition(":")
        status[key] = value.strip()
    kib = lambda key: int(status.get(key, "0 kB").split()[0])
    try:
        import os
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        fds = -1
    return {"rss_mib": round(kib("VmRSS") / 1024, 1), "hwm_mib": round(kib("VmHWM") / 1024, 1), "fds": fds}


async def client(host, port, path, rate, seconds, rcvbuf, stats):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (host, port))
        await loop.sock_sendall(sock, ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        first = await loop.sock_recv(sock, 4096)
        if not first.startswith(b"HTTP/1.1 200"):
            stats["errors"] += 1
            return
        received = len(first)
        start = time.time()
        while time.time() - start < seconds:
            # Read at most what the rate allows so far, then wait.
            allowed = int(rate * (time.time() - start)) - received
            if allowed <= 0:
                await asyncio.sleep(0.1)
                continue
            chunk = await loop.sock_recv(sock, min(allowed, 65536))
            if not chunk:
                # The server closed a download this client was still reading.
                stats["cut"] += 1
                break
            received += len(chunk)
        stats["bytes"] += received
    except OSError:
        stats["errors"] += 1
    finally:
        sock.close()


async def main(args):
    u = urllib.parse.urlsplit(args.base)
    path = "/exports/%s/download" % args.export
    stats = {"bytes": 0, "errors": 0, "cut": 0}
    before = sample(args.pid)
    peak = dict(before)
    tasks = [asyncio.create_task(client(u.hostname, u.port, path, args.rate, args.seconds, args.rcvbuf, stats)) for _ in range(args.clients)]
    started = time.time()
    while not all(t.done() for t in tasks):
        now = sample(args.pid)
        peak = {key: max(peak[key], now[key]) for key in peak}
        await asyncio.sleep(0.5)
    await asyncio.gather(*tasks)
    elapsed = time.time() - started
    await asyncio.sleep(args.settle)
    after = sample(args.pid)
    print(json.dumps({
        "clients": args.clients, "rate_bytes_per_second": args.rate, "seconds": round(elapsed, 1),
        "received_mib": round(stats["bytes"] / 2**20, 1), "errors": stats["errors"], "cut": stats["cut"],
        "before": before, "peak": peak, "after_settle": after,
    }, indent=2))
    return 1 if stats["errors"] or stats["cut"] else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--export", required=True, help="id of a completed export")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rate", type=parse_rate, default=parse_rate("64k"), help="bytes per second per client (k, m suffixes)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--rcvbuf", type=parse_rate, default=parse_rate("32k"), help="each client's SO_RCVBUF (0: the system's default)")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
