#!/usr/bin/env python3
"""The seed's design, as the baseline peer of scripts/bench.sh.

What a typical Python service does to export a table as CSV: a server-side
(named) cursor fetches the rows in batches, and the application writes each
row with Python's csv module. It writes to a FILE rather than serving HTTP
(so the comparison with the gateway leaves out the HTTP layer, which favours
this peer a little).

To come as close to PostgreSQL's CSV bytes as the csv module can, the session
runs with TimeZone UTC and timestamptz and numeric values are loaded as the
server's own text (psycopg's text loader) instead of datetime and Decimal
objects. What csv.writer still cannot do (Python 3.11, QUOTE_MINIMAL):
- it writes the empty string like NULL (nothing), where COPY writes `""`:
  the one difference on the seeded table;
- it leaves a field with a lone CR unquoted (CR is not in its line
  terminator), where COPY quotes it; the seeded data has CR only in CRLF,
  which is quoted for its LF either way;
- it would leave a lone `\\.` unquoted in a one-column export, which COPY
  quotes (with several columns COPY does not quote it either).

Needs psycopg 3 (scripts/bench.sh installs it in .build/bench-venv). The
connection URI comes from the environment (BENCH_DATABASE_URL), never the
command line. Prints one JSON object.

    export  --sql SQL --out FILE     the whole export; seconds, rows, peak RSS
    first-byte --sql SQL --out FILE  seconds from the query to the first batch written
"""
import argparse
import csv
import json
import os
import resource
import sys
import time

import psycopg
from psycopg.adapt import Loader

BATCH = 10_000  # rows per FETCH from the named cursor


class TextLoader(Loader):
    """The server's text form of a value, as a str."""

    def load(self, data):
        return bytes(data).decode("utf-8")


def connect():
    conn = psycopg.connect(os.environ["BENCH_DATABASE_URL"], autocommit=False)
    conn.execute("SET TimeZone TO 'UTC'")
    for type_name in ("timestamptz", "timestamp", "numeric"):
        conn.adapters.register_loader(type_name, TextLoader)
    return conn


def export(sql, out_path, first_batch_only=False):
    conn = connect()
    rows_written = 0
    try:
        with open(out_path, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            start = time.perf_counter()
            with conn.cursor(name="export") as cur:
                cur.itersize = BATCH
                cur.execute(sql)
                header_written = False
                while True:
                    rows = cur.fetchmany(BATCH)
                    if not header_written:
                        writer.writerow([column.name for column in cur.description])
                        header_written = True
                    if not rows:
                        break
                    writer.writerows(rows)
                    rows_written += len(rows)
                    if first_batch_only:
                        out.flush()
                        break
            out.flush()
            seconds = time.perf_counter() - start
        conn.rollback()
    finally:
        conn.close()
    result = {"seconds": seconds, "rows": rows_written, "batch": BATCH,
              "maxRssKiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["export", "first-byte"])
    ap.add_argument("--sql", required=True)
    ap.add_argument("--out", required=True, help="file to write the CSV to")
    args = ap.parse_args()
    print(json.dumps(export(args.sql, args.out, first_batch_only=args.mode == "first-byte")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
