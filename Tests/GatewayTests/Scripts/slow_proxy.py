#!/usr/bin/env python3
"""A TCP proxy that passes what the server sends at most RATE bytes a second
per connection (what the client sends, unlimited), so an export read through
it takes seconds whatever the machine's load, and a test can watch it run.

    python3 slow_proxy.py --target PORT --rate BYTES [--port 0]

Forwards every connection to 127.0.0.1:PORT. Prints "slow_proxy listening
on 127.0.0.1:PORT" to stderr once it listens. Stdlib only; two threads per
connection (proxy_listener.py).
"""
import argparse
import socket
import threading
import time

from proxy_listener import serve_forever


def pipe(source, sink, rate):
    """Copies until either side closes; at most `rate` bytes a second when
    set. Time left idle earns no credit: a connection kept open in a pool
    and then used for an export is as slow as a new one."""
    free_at = 0.0
    try:
        while True:
            data = source.recv(16384 if rate else 262144)
            if not data:
                break
            sink.sendall(data)
            if rate:
                now = time.monotonic()
                free_at = max(free_at, now) + len(data) / rate
                if free_at > now:
                    time.sleep(free_at - now)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client, target, rate):
    try:
        upstream = socket.create_connection(("127.0.0.1", target))
    except OSError:
        client.close()
        return
    threading.Thread(target=pipe, args=(client, upstream, 0), daemon=True).start()
    pipe(upstream, client, rate)
    client.close()
    upstream.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve_forever("slow_proxy", args.port, lambda client: serve(client, args.target, args.rate))


if __name__ == "__main__":
    main()
