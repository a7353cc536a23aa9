"""Hostile and careless clients, for the fault tests. Loopback only, bounded.

usage:
  clients.py disconnect HOST PORT PATH N    N clients start a download and hang up
                                            after a few KB (half of them with a
                                            TCP reset); prints "done N"
  clients.py slowloris HOST PORT N SECONDS  N clients send a request head one
                                            byte at a time and never finish it;
                                            prints how many the server closed
                                            within SECONDS, and how long /health
                                            took to answer meanwhile
  clients.py malformed HOST PORT            a battery of malformed requests;
                                            prints one line per request with the
                                            status (or "closed"); exits 1 if any
                                            got a 5xx or a 2xx
  clients.py idle HOST PORT N SECONDS       N connections that send nothing, held
                                            SECONDS; prints the statuses a fresh
                                            health check and export lookup got
  clients.py stuck HOST PORT PATH N SECONDS N clients ask for a download and never
                                            read; after SECONDS prints how many the
                                            server has closed
  clients.py paced HOST PORT PATH RATE SECONDS  one client reads a download at RATE
                                            bytes/s for SECONDS; prints "alive" and
                                            the bytes read, or "closed" and when
"""
import socket
import struct
import sys
import threading
import time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])


def status_of(sock, timeout=5):
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    if not data.startswith(b"HTTP/1.1 "):
        return "closed"
    return data.split(b" ")[1].decode()


def request(raw, timeout=5):
    sock = socket.create_connection((host, port))
    try:
        sock.sendall(raw)
        return status_of(sock, timeout)
    except OSError:
        return "closed"
    finally:
        sock.close()


def timed_health():
    start = time.time()
    status = request(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return status, time.time() - start


if mode == "disconnect":
    path, n = sys.argv[4], int(sys.argv[5])

    def one(i):
        sock = socket.create_connection((host, port))
        try:
            sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            got = 0
            while got < 8192 + i * 64:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += len(chunk)
            if i % 2 == 0:
                # SO_LINGER 0: close() sends a reset, as a client that crashed.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done %d" % n)

elif mode == "slowloris":
    n, seconds = int(sys.argv[4]), float(sys.argv[5])
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        socks.append(s)
    closed = set()
    start = time.time()
    health = None
    i = 0
    while time.time() - start < seconds and len(closed) < n:
        for index, s in enumerate(socks):
            if index in closed:
                continue
            try:
                s.send(head[i % len(head):i % len(head) + 1])
                data = s.recv(100)
                if data == b"":
                    closed.add(index)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(index)
        if health is None and time.time() - start > 0.5:
            health = timed_health()
        i += 1
        time.sleep(0.05)
    print("closed %d of %d in %.1f s; health %s in %.3f s" % (len(closed), n, time.time() - start, health[0] if health else "-", health[1] if health else -1))
    for s in socks:
        s.close()

elif mode == "malformed":
    cases = [
        ("garbage", b"GARBAGE\r\n\r\n"),
        ("bad version", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
        ("no host, lf only", b"GET /health HTTP/1.1\n\n"),
        ("huge header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"),
        ("huge url", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("many headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n"),
        ("nul in header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n"),
        ("header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
        ("space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("bad chunked body", b"POST /exports/csv HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n"),
        ("both lengths", b"POST /exports/csv HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("negative length", b"POST /exports/csv HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("huge length", b"POST /exports/csv?columns=id HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        ("bad method", b"G\x01T /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("unknown method", b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("absolute url", b"GET http://evil/exports/../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("traversal", b"GET /exports/..%2F..%2Fetc%2Fpasswd/download HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad percent", b"GET /exports/csv?columns=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("not utf8 query", b"GET /exports/csv?nullAs=%FF HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("raw high bytes", b"GET /exports/csv?nullAs=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad range", b"GET /health HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999999999999999-\r\n\r\n"),
        ("expect", b"POST /exports/csv?columns=id HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"),
        ("upgrade h2c", b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
        ("http2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ]
    bad = 0
    for name, raw in cases:
        status = request(raw)
        # A 2xx only where the head is well-formed and the rest is not ours to
        # judge: a Range on /health, an upgrade we ignore, a request body we
        # never read (the answer comes first; the body is then discarded
        # within the header timeout).
        served = ("bad range", "upgrade h2c", "bad chunked body", "expect")
        ok = status == "closed" or status.startswith("4") or (status.startswith("2") and name in served)
        if status.startswith("5") or not ok:
            bad += 1
        print("%-20s %s%s" % (name, status, "" if ok else "  <- unexpected"))
    sys.exit(1 if bad else 0)

elif mode == "stuck":
    path, n, seconds = sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        socks.append(s)
    time.sleep(seconds)
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    closed += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print("closed %d of %d" % (closed, n))

elif mode == "paced":
    path, rate, seconds = sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
    # 8 MB read at full speed first: the kernel then lets the server's send
    # buffer grow to megabytes, which a slow reader drains only slowly, so a
    # write of the server completes rarely. A receive buffer of 64 KiB: one
    # of megabytes would, once full, stay closed (zero window) until half of
    # it is read, and a client that takes no data for that long is, to TCP
    # and to the server, a client that takes nothing.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect((host, port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    burst = 0
    while burst < 8 << 20:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        burst += len(chunk)
    start, got, closed = time.time(), 0, None
    s.settimeout(1)
    while time.time() - start < seconds:
        allowed = int(rate * (time.time() - start)) - got
        if allowed <= 0:
            time.sleep(0.05)
            continue
        try:
            chunk = s.recv(min(allowed, 8192))
        except socket.timeout:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            closed = time.time() - start
            break
        got += len(chunk)
    print(("closed after %.1f s" % closed if closed is not None else "alive") + " read %d after %d" % (got, burst))
    s.close()

elif mode == "idle":
    n, seconds = int(sys.argv[4]), float(sys.argv[5])
    socks = [socket.create_connection((host, port)) for _ in range(n)]
    time.sleep(0.3)
    health = request(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lookup = request(b"GET /exports/00000000-0000-0000-0000-000000000000/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    print("health %s lookup %s" % (health, lookup))
    time.sleep(max(0, seconds - 0.3))
    for s in socks:
        s.close()
