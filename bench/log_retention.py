"""What the request log's retention costs and bounds.

    python bench/log_retention.py [--rows 500000]

Fills a SQLite log with ``--rows`` rows older than the retention (a row as the gateway writes
it without text: about 300 bytes), then drives ``RequestLog`` as the gateway does: rows
recorded by concurrent writers, each waiting for its commit, while the writer thread removes
the expired rows a chunk at a time between batches. Prints:

- how fast rows are removed (rows/s) and the longest chunk (what a row being written may
  wait behind it);
- the commit latency of the rows written meanwhile (median, p99, max) beside the same load
  on a log with nothing to remove;
- that every key's spend is what it was before;
- the file's size full, and after the same number of new rows has replaced the old ones
  (SQLite reuses the freed pages: the file does not grow).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from llmtriage.serving import requestlog
from llmtriage.serving.requestlog import RequestLog

DAY = 86_400.0
STEPS = json.dumps([{"model": "qwen2.5-0.5b", "confidence": -0.41, "cost_usd": 1.2e-7,
                     "latency_ms": 812.0}])


def fill(path: Path, rows: int, created: float) -> None:
    RequestLog(path).close()  # the schema
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO requests (id, created, client, policy, session, status, answered_by,"
            " steps, cost_usd, latency_ms, tokens_in, tokens_out) VALUES (?, ?, ?, 'triage',"
            " ?, 200, 'qwen2.5-0.5b', ?, ?, 812.0, 40, 12)",
            ((f"chatcmpl-{created:.0f}-{i:09d}", created + i * 1e-3, f"team-{i % 7}",
              f"{i:032x}", STEPS, 1e-6 * (i % 13)) for i in range(rows)))


def row(i: int) -> dict:
    return {"id": f"new-{i:09d}", "created": time.time(), "client": f"team-{i % 7}",
            "policy": "triage", "session": None, "status": 200, "answered_by": "qwen2.5-0.5b",
            "steps": json.loads(STEPS), "cost_usd": 1e-6, "latency_ms": 812.0,
            "tokens_in": 40, "tokens_out": 12, "prompt": None, "answer": None, "error": None,
            "task": None}


async def write(log: RequestLog, n: int, concurrency: int) -> np.ndarray:
    latencies: list[float] = []

    async def writer(k: int) -> None:
        for i in range(k, n, concurrency):
            began = time.perf_counter()
            await log.record(row(i))
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(writer(k) for k in range(concurrency)))
    return np.array(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--written", type=int, default=20_000,
                        help="rows recorded while the expired ones are removed")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    chunks: list[float] = []
    prune = RequestLog.prune

    def timed(self: RequestLog) -> int:
        began = time.perf_counter()
        try:
            return prune(self)
        finally:
            chunks.append(time.perf_counter() - began)

    with tempfile.TemporaryDirectory() as tmp:
        expired, fresh = Path(tmp) / "expired.sqlite", Path(tmp) / "fresh.sqlite"
        fill(expired, args.rows, time.time() - 100 * DAY)
        fill(fresh, args.rows, time.time() - DAY / 2)  # the same rows, none expired
        full = expired.stat().st_size
        spent = RequestLog(expired).spent_by_client()
        print(f"log: {args.rows:,} rows, {full / 2**20:.0f} MiB")

        log = RequestLog(fresh, retention_s=90 * DAY)
        baseline = asyncio.run(write(log, args.written, args.concurrency))
        log.close()

        RequestLog.prune = timed  # type: ignore[method-assign]
        log = RequestLog(expired, retention_s=90 * DAY)
        began = time.perf_counter()
        during = asyncio.run(write(log, args.written, args.concurrency))

        async def drained(reader: sqlite3.Connection) -> None:
            while reader.execute(
                    "SELECT COUNT(*) FROM requests WHERE id NOT LIKE 'new-%'").fetchone()[0]:
                await asyncio.sleep(0.05)
            await log.spent_now()

        with closing(sqlite3.connect(expired)) as reader:
            asyncio.run(drained(reader))
        took = time.perf_counter() - began
        RequestLog.prune = prune  # type: ignore[method-assign]
        removed_in = sum(chunks)
        after = log.spent_by_client()
        log.close()
        print(f"removed {args.rows:,} expired rows in {len(chunks)} chunks of "
              f"{requestlog.PRUNE_CHUNK}: {removed_in:.1f} s of the writer thread "
              f"({args.rows / removed_in:,.0f} rows/s), longest chunk "
              f"{max(chunks) * 1e3:.0f} ms; all gone {took:.1f} s after the first row")
        for name, ms in (("no rows to remove", baseline), ("while removing", during)):
            print(f"commit latency of {args.written:,} rows, {args.concurrency} writers, "
                  f"{name}: median {np.median(ms):.2f} ms, p99 "
                  f"{np.percentile(ms, 99):.1f} ms, max {ms.max():.0f} ms")
        written = {f"team-{k}": len(range(k, args.written, 7)) * 1e-6 for k in range(7)}
        carried = {k: after[k] - written[k] for k in spent}
        drift = max(abs(carried[k] - spent[k]) for k in spent)
        print(f"every key's spend kept: largest difference ${drift:.2e} "
              f"(of ${max(spent.values()):.2f})")
        log = RequestLog(expired)

        async def refill() -> None:
            for start in range(args.written, args.rows, 5_000):
                await asyncio.gather(*(log.record(row(i))
                                       for i in range(start, min(start + 5_000, args.rows))))

        asyncio.run(refill())
        log.close()
        with sqlite3.connect(expired) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"file: {full / 2**20:.0f} MiB full of expired rows; "
              f"{expired.stat().st_size / 2**20:.0f} MiB once {args.rows:,} new rows replaced "
              f"them (freed pages reused)")


if __name__ == "__main__":
    main()
