"""How far the shared pieces go: Redis admissions per second and request-log rows per second.

    python bench/state_capacity.py [--seconds 10] [--concurrency 64]

Starts a redis-server and a throwaway PostgreSQL cluster on loopback (as the tests do), then
drives the gateway's own code, not a synthetic client:

- ``RedisState``: admission plus settlement of a key with a rate limit and a budget (the two
  atomic scripts every limited request runs), from ``--concurrency`` concurrent tasks, and
  Redis's own CPU time per pair (from INFO cpu): what one Redis core could serve;
- ``RequestLog``: rows committed per second into SQLite and into PostgreSQL (group commit:
  the rows waiting together share a transaction), from ``--concurrency`` concurrent writers
  each waiting for its commit, as a request does before it is answered.

Prints each rate and what it means for a cluster: how many gateway nodes at the measured
single-node pass-through throughput (about 290 requests/s on 2 cores) each shared piece
carries before it is the bottleneck. Everything shares this 2-core machine with the load,
so the rates are lower bounds for a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from servers.processes import postgres_server, redis_server  # noqa: E402

from llmtriage.serving.config import ClientKey  # noqa: E402
from llmtriage.serving.requestlog import RequestLog  # noqa: E402
from llmtriage.serving.state.redis import RedisState  # noqa: E402

#: Single-node pass-through throughput measured by bench/gateway_overhead.py (req/s).
NODE_RPS = 290.0


async def redis_cpu(state: RedisState) -> float:
    info = await state.client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def admissions(url: str, seconds: float, concurrency: int) -> tuple[float, float]:
    """Admission-plus-settlement pairs per second, and Redis's own CPU seconds per pair."""
    state = RedisState(url)
    key = ClientKey(name="bench", sha256="0" * 64, requests_per_minute=1e12, budget_usd=1e12)
    done = 0
    until = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < until:
            ticket = await state.admit(key, 1e-6)
            await state.settle(ticket, 1e-6)
            done += 1

    cpu = await redis_cpu(state)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    per_pair = (await redis_cpu(state) - cpu) / done
    await state.aclose()
    return rate, per_pair


async def log_rows(target: str | Path, seconds: float, concurrency: int) -> float:
    log = RequestLog(target)
    done = 0
    until = time.perf_counter() + seconds

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < until:
            row = {"id": f"bench-{w}-{i}", "created": time.time(), "client": "bench",
                   "policy": "p", "session": None, "status": 200, "answered_by": "m",
                   "steps": [{"model": "m", "confidence": -0.1, "latency_ms": 1.0,
                              "cost_usd": 1e-6}], "cost_usd": 1e-6, "latency_ms": 2.0,
                   "tokens_in": 7, "tokens_out": 2, "prompt": None, "answer": None,
                   "error": None}
            await asyncio.wrap_future(log.record(row))
            done += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(concurrency)))
    rate = done / (time.perf_counter() - started)
    log.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="triage-capacity-"))
    with redis_server(work) as redis_url, postgres_server() as pg_url:
        pairs, redis_s = asyncio.run(admissions(redis_url, args.seconds, args.concurrency))
        rates = {
            "Redis admission + settlement": pairs,
            "  the same, Redis's CPU alone": 1.0 / redis_s,
            "request log rows, SQLite": asyncio.run(
                log_rows(work / "log.sqlite", args.seconds, args.concurrency)),
            "request log rows, PostgreSQL": asyncio.run(
                log_rows(pg_url, args.seconds, args.concurrency)),
        }
    print(f"{args.concurrency} concurrent tasks, {args.seconds:g} s each, one process on "
          "this machine:")
    print(f"  (Redis spends {redis_s * 1e6:.0f} us of CPU per admission and settlement; "
          "the first line is bound by this one Python client)")
    for name, rate in rates.items():
        print(f"  {name:32s} {rate:9.0f} /s   = {rate / NODE_RPS:6.1f} nodes at "
              f"{NODE_RPS:.0f} req/s each")


if __name__ == "__main__":
    main()
