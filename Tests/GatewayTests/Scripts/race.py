"""Races creates against cancels, deletes, downloads and expiry, from many
threads at random delays, and reports every answer the gateway gave.

usage: race.py BASE_URL SECONDS WORKERS SEED OUT.json

Each worker loops until SECONDS have passed: it creates an export (POST, a
few distinct requests so that many coalesce, sometimes with
Cache-Control: no-cache), waits 0-15 ms, then does one of: cancel it at once,
read part of its live download and hang up, wait for it and delete it, ask
its status, or leave it. Every answer is checked on the spot for what it
may be; a 5xx other than a 503 with Retry-After, or a 2xx where none may
be, is an error. Connection failures (the server stopping under the test)
count as "no answer", never as errors.

OUT.json gets: the ids acknowledged as created (202), as cancelled (200 to a
DELETE of a queued or running export), as deleted (204), those whose DELETE
got no answer (it may or may not have happened), the errors, and the number
of requests made.
"""
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

base, seconds, workers, seed, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlsplit(base)
QUERIES = [
    "columns=id",
    "columns=id,email&country_code=US",
    "subscription_tier=pro&min_ltv=500",
    "columns=notes,full_name&delimiter=%3B",
    "country_code=DE,FR&excel=true",
]
ACTIONS = os.environ.get("RACE_ACTIONS", "cancel,cancel,download,delete,status,leave").split(",")
lock = threading.Lock()
created, cancelled, deleted, unanswered, errors = [], [], [], [], []
requests = [0]


def request(method, path, headers=None, read=True, partial=False):
    """(status, headers, body) or None when there was no answer."""
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        with lock:
            requests[0] += 1
        if partial:
            body = resp.read(random.randint(1, 20000))
        else:
            body = resp.read() if read else b""
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), body
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def error(what):
    with lock:
        errors.append(what)


def check_5xx(answer, what):
    if answer is None:
        return
    status, headers, _ = answer
    if status >= 500 and not (status == 503 and "retry-after" in headers):
        error("%s: %d" % (what, status))


def worker(index):
    rng = random.Random(seed * 1000 + index)
    deadline = time.time() + seconds
    while time.time() < deadline:
        query = rng.choice(QUERIES)
        headers = {"Cache-Control": "no-cache"} if rng.random() < 0.2 else {}
        answer = request("POST", "/exports/csv?" + query, headers)
        check_5xx(answer, "POST " + query)
        if answer is None or answer[0] != 202:
            if answer is not None and answer[0] not in (202, 429, 503, 507):
                error("POST %s: unexpected %d" % (query, answer[0]))
            continue
        export_id = json.loads(answer[2])["exportId"]
        with lock:
            created.append(export_id)
        time.sleep(rng.random() * 0.015)
        action = rng.choice(ACTIONS)
        if action == "cancel":
            answer = request("DELETE", "/exports/" + export_id)
            check_5xx(answer, "DELETE")
            if answer is None:
                with lock:
                    unanswered.append(export_id)
            else:
                status = answer[0]
                if status == 200:
                    state = json.loads(answer[2]).get("status")
                    if state != "cancelled":
                        error("DELETE 200 with status %s" % state)
                    with lock:
                        cancelled.append(export_id)
                elif status == 204:
                    with lock:
                        deleted.append(export_id)
                elif status not in (410, 503):
                    error("DELETE: unexpected %d" % status)
        elif action == "download":
            answer = request("GET", "/exports/%s/download" % export_id, partial=True)
            check_5xx(answer, "download")
            if answer is not None and answer[0] not in (200, 206, 409, 410):
                error("download: unexpected %d" % answer[0])
        elif action == "delete":
            for _ in range(100):
                answer = request("GET", "/exports/%s/status" % export_id)
                if answer is None or answer[0] != 200 or json.loads(answer[2])["status"] not in ("queued", "running"):
                    break
                time.sleep(0.01)
            answer = request("DELETE", "/exports/" + export_id)
            check_5xx(answer, "DELETE after the end")
            if answer is None:
                with lock:
                    unanswered.append(export_id)
            elif answer[0] == 204:
                with lock:
                    deleted.append(export_id)
            elif answer is not None and answer[0] == 200:
                with lock:
                    cancelled.append(export_id)
        elif action == "status":
            answer = request("GET", "/exports/%s/status" % export_id)
            check_5xx(answer, "status")
            if answer is not None and answer[0] not in (200, 410):
                error("status: unexpected %d" % answer[0])


threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
json.dump({"created": created, "cancelled": cancelled, "deleted": deleted, "unanswered": unanswered, "errors": errors, "requests": requests[0]}, open(out, "w"))
print("requests %d created %d cancelled %d deleted %d errors %d" % (requests[0], len(created), len(cancelled), len(deleted), len(errors)))
