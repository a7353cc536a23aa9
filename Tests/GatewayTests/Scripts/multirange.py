"""Checks multi-range and If-Range answers with Python's http.client.

usage: multirange.py URL EXPECTED_FILE
Prints one line per check; exits non-zero on the first failure.
"""
import http.client
import sys
import urllib.parse

url, expected_path = sys.argv[1], sys.argv[2]
expected = open(expected_path, "rb").read()
size = len(expected)
u = urllib.parse.urlsplit(url)


def get(headers):
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", u.path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)
    print("ok", what)


def parts(resp, body):
    ctype = resp.getheader("Content-Type")
    check(ctype.startswith("multipart/byteranges; boundary="), "multipart content type: " + ctype)
    boundary = ctype.split("boundary=", 1)[1].encode()
    check(int(resp.getheader("Content-Length")) == len(body), "Content-Length is the body's length")
    out = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        lines = head.decode().strip().split("\r\n")
        fields = dict(l.split(": ", 1) for l in lines)
        first_last, total = fields["Content-Range"].split(" ")[1].split("/")
        first, last = map(int, first_last.split("-"))
        check(int(total) == size, "part total is the file size")
        out.append((first, last, data))
    return out


resp, body = get({"Range": "bytes=0-9,100-109,-5"})
check(resp.status == 206, "three ranges: 206")
got = parts(resp, body)
check([(f, l) for f, l, _ in got] == [(0, 9), (100, 109), (size - 5, size - 1)], "three parts in order")
for f, l, data in got:
    check(data == expected[f:l + 1], f"part {f}-{l} has the file's bytes")

resp, body = get({"Range": "bytes=0-99,50-149,150-199"})
check(resp.status == 206 and resp.getheader("Content-Range") == f"bytes 0-199/{size}", "overlapping and adjacent ranges merge into one")
check(body == expected[:200], "merged range body")

resp, body = get({"Range": "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(40))})
check(resp.status == 200 and body == expected, "too many ranges: the whole file")

resp, body = get({"Range": f"bytes=0-4,{size + 10}-{size + 20}"})
check(resp.status == 206 and body == expected[:5], "an unsatisfiable range among others is dropped")

etag = get({"Range": "bytes=0-0"})[0].getheader("ETag")
resp, body = get({"Range": "bytes=0-9,20-29", "If-Range": etag})
check(resp.status == 206, "If-Range with the ETag: ranges honoured")
resp, body = get({"Range": "bytes=0-9,20-29", "If-Range": '"0000"'})
check(resp.status == 200 and body == expected, "If-Range with another ETag: the whole file")
resp, body = get({"Range": "bytes=0-9", "If-Range": "Sun, 29 Nov 2026 00:00:00 GMT"})
check(resp.status == 200 and body == expected, "If-Range with a date: the whole file (the ETag is the validator)")

for hostile in ["bytes=--1", "bytes=1-2-3", "bytes=" + "9" * 40 + "-", "bytes= , ", "bytes=-", "\u00e9", "bytes=0-0," * 1000]:
    try:
        resp, body = get({"Range": hostile})
        check(resp.status in (200, 206, 416), f"hostile Range {hostile[:30]!r}: {resp.status}")
    except http.client.HTTPException as e:
        print("FAIL", hostile[:30], e)
        sys.exit(1)
# A parallel range downloader: four connections, one quarter each, checked against the ETag.
import hashlib
import threading

quarter = (size + 3) // 4
pieces = [None] * 4


def fetch(i):
    first, last = i * quarter, min(size, (i + 1) * quarter) - 1
    resp, body = get({"Range": f"bytes={first}-{last}", "If-Range": etag})
    if resp.status == 206 and resp.getheader("Content-Range") == f"bytes {first}-{last}/{size}":
        pieces[i] = body


threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(all(p is not None for p in pieces), "four parallel ranges answered 206")
assembled = b"".join(pieces)
check(assembled == expected, "the assembled file is the file")
check('"' + hashlib.sha256(assembled).hexdigest() + '"' == etag, "its SHA-256 is the ETag")
print("all checks passed")
