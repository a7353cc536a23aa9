#!/usr/bin/env python3
"""An HTTP/1.1 proxy that damages download bodies, to prove the load test
catches a gateway that does.

    python3 fault_proxy.py --mode corrupt|truncate|early-end|none --target PORT [--port 0]

Forwards every request to 127.0.0.1:PORT (one upstream connection per
request) and the answer back on the client's kept-alive connection. Bodies
of downloads (GET .../download and GET /exports/csv answered 200 or 206)
are damaged by mode; everything else (status JSON, creates, deletes) passes
untouched:

  none       every byte as the gateway sent it, framing included (a body the
             gateway aborts is aborted here too);
  corrupt    one byte of each body flipped (the middle of its first piece);
             length and framing unchanged;
  truncate   about half of the first piece sent, then the connection closed
             (fewer bytes than Content-Length, or no final chunk);
  early-end  the body sent chunked (Content-Length dropped), and the final
             chunk `0\\r\\n\\r\\n` sent after about half of the first piece:
             a short body that looks complete.

Prints "fault_proxy listening on 127.0.0.1:PORT" to stderr once it listens.
Stdlib only; a thread per connection (proxy_listener.py).
"""
import argparse
import socket

from proxy_listener import serve_forever

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


class Stream:
    """Buffered reads from a socket: lines, exact counts, whatever is there."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise EOFError
            self.fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def some(self, limit):
        if not self.buf:
            self.fill()
        data, self.buf = self.buf[:limit], self.buf[limit:]
        return data


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.strip(), value.strip()))
    return lines[0], fields


def field(fields, name):
    for key, value in fields:
        if key.lower() == name:
            return value
    return None


def pieces(upstream, framing, length):
    """The body's data as it arrives; EOFError if it ends before its end."""
    if framing == "length":
        left = length
        while left > 0:
            data = upstream.some(min(left, 262144))
            left -= len(data)
            yield data
    elif framing == "chunked":
        while True:
            size = int(upstream.line().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while upstream.line():  # trailers, then the empty line
                    pass
                return
            data = upstream.exact(size)
            upstream.exact(2)
            yield data
    elif framing == "close":
        while True:
            try:
                data = upstream.some(262144)
            except EOFError:
                return
            yield data


def serve(client, target, mode):
    reader = Stream(client)
    try:
        while True:
            try:
                request_head = reader.head()
            except (EOFError, OSError):
                return
            request_line, request_fields = parse_head(request_head)
            method, path = request_line.split(" ")[:2]
            body = reader.exact(int(field(request_fields, "content-length") or 0))
            keep_alive = (field(request_fields, "connection") or "").lower() != "close"

            upstream_sock = socket.create_connection(("127.0.0.1", target))
            try:
                out = [request_line] + [f"{k}: {v}" for k, v in request_fields if k.lower() not in HOP_BY_HOP] + ["Connection: close"]
                upstream_sock.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
                upstream = Stream(upstream_sock)
                status_line, fields = parse_head(upstream.head())
                code = int(status_line.split(" ")[1])
                length = field(fields, "content-length")
                if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
                    framing = "none"
                elif "chunked" in (field(fields, "transfer-encoding") or "").lower():
                    framing = "chunked"
                elif length is not None:
                    framing = "length"
                else:
                    framing = "close"
                plain_path = path.split("?")[0]
                is_download = method == "GET" and code in (200, 206) and (plain_path.endswith("/download") or plain_path == "/exports/csv")
                fault = mode if is_download and framing != "none" and (framing != "length" or int(length) > 0) else "none"
                if framing == "close":
                    keep_alive = False

                kept = [(k, v) for k, v in fields if k.lower() not in HOP_BY_HOP]
                out_chunked = framing == "chunked" or fault == "early-end"
                if fault == "early-end":
                    kept = [(k, v) for k, v in kept if k.lower() not in ("content-length", "transfer-encoding")] + [("Transfer-Encoding", "chunked")]
                kept.append(("Connection", "keep-alive" if keep_alive and fault == "none" else "close"))
                client.sendall(("\r\n".join([status_line] + [f"{k}: {v}" for k, v in kept]) + "\r\n\r\n").encode("latin-1"))

                def send(data):
                    if not data:
                        return
                    client.sendall(b"%x\r\n%s\r\n" % (len(data), data) if out_chunked else data)

                first = True
                try:
                    for data in pieces(upstream, framing, int(length or 0)):
                        if first and data and fault != "none":
                            first = False
                            half = len(data) // 2
                            if fault == "corrupt":
                                data = data[:half] + bytes([data[half] ^ 0x01]) + data[half + 1:]
                            elif fault == "truncate":
                                send(data[:half])
                                return  # closes the client connection: no more bytes, no final chunk
                            elif fault == "early-end":
                                send(data[:half])
                                client.sendall(b"0\r\n\r\n")
                                return
                        send(data)
                except EOFError:
                    return  # the gateway aborted the body: abort it here too
                if out_chunked:
                    client.sendall(b"0\r\n\r\n")
                if not keep_alive or fault != "none":
                    return
            finally:
                upstream_sock.close()
    except (OSError, ValueError, IndexError):
        return
    finally:
        try:
            client.close()
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["none", "corrupt", "truncate", "early-end"], required=True)
    parser.add_argument("--target", type=int, required=True, help="the gateway's port on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    args = parser.parse_args()
    serve_forever("fault_proxy", args.port, lambda client: serve(client, args.target, args.mode))


if __name__ == "__main__":
    main()
