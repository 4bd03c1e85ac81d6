"""Isolation between models: a healthy model's latency while another model hangs.

    python bench/gateway_isolation.py [--requests 2000] [--clients 100] [--hang-clients 100]

All on loopback: the fault-injecting upstream of the tests (tests/servers/upstream.py) and a
`triage serve` with two models, "ok" (answers at once) and "hang" (never answers; its calls
hit their 30 s deadline). ``--clients`` concurrent clients send ``--requests`` requests to
"ok", twice: alone, then while ``--hang-clients`` more keep calling "hang" (each waits for its
answer, then for the Retry-After it was given, as a well-behaved client does). Prints p50 and
p99 of "ok" in both runs and their ratio. Target: p99 with the hang within 2x of p99
without it (before per-model queues, every request to the healthy model got a 429 once the
hanging model's calls had filled the gateway's global slots).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from gateway_overhead import free_port, start

UPSTREAM = Path(__file__).resolve().parents[1] / "tests" / "servers" / "upstream.py"

CONFIG = """
[[models]]
name = "ok"
backend = "openai"
endpoint = "{up}/v1"
max_concurrency = 128

[[models]]
name = "hang"
backend = "openai"
endpoint = "{up}/v1"
max_concurrency = 4
max_queue = 4
max_retries = 0
timeout_s = 30

[gateway]
request_log = "{work}/requests.sqlite"
breaker_failures = 100000
"""


def upstream() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(UPSTREAM), "0"], stdout=subprocess.PIPE,
                            text=True)
    port = int(proc.stdout.readline().split()[-1])
    return proc, f"http://127.0.0.1:{port}"


async def healthy(url: str, n: int, clients: int) -> np.ndarray:
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            t = time.perf_counter()
            r = await client.post(url, json={"model": "ok", "messages": [
                {"role": "user", "content": f"question {i}"}]})
            latencies.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return np.array(latencies)


async def hammer(url: str, clients: int, stop: asyncio.Event, codes: dict[int, int]) -> None:
    async def worker(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            r = await client.post(url, json={"model": "hang", "messages": [
                {"role": "user", "content": "are you there?"}]})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            await asyncio.sleep(float(r.headers.get("retry-after", 1)))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))


async def with_hang(url: str, n: int, clients: int, hang_clients: int
                    ) -> tuple[np.ndarray, str]:
    """The healthy run while another process (its own event loop and core time, as other
    users' clients would be) keeps calling the hanging model."""
    hammerer = subprocess.Popen([sys.executable, __file__, "--hammer", url,
                                 "--hang-clients", str(hang_clients)],
                                stdout=subprocess.PIPE, text=True)
    await asyncio.sleep(3.0)  # the hanging model's slots and queue are full by now
    latencies = await healthy(url, n, clients)
    hammerer.terminate()
    return latencies, hammerer.communicate(timeout=30)[0].strip()


def hammer_until_stopped(url: str, clients: int) -> None:
    import signal

    codes: dict[int, int] = {}

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        task = asyncio.ensure_future(hammer(url, clients, stop, codes))
        await stop.wait()
        task.cancel()

    asyncio.run(run())
    print(dict(sorted(codes.items())), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--hang-clients", type=int, default=100)
    parser.add_argument("--hammer", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hammer:
        hammer_until_stopped(args.hammer, args.hang_clients)
        return

    work = Path(tempfile.mkdtemp(prefix="triage-isolation-"))
    up_proc, up = upstream()
    config = work / "gateway.toml"
    config.write_text(CONFIG.format(up=up, work=work))
    port = free_port()
    gateway = start([sys.executable, "-m", "llmtriage.cli", "serve", "--config", str(config),
                     "--port", str(port)], f"http://127.0.0.1:{port}/health",
                    work / "gateway.log")
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        asyncio.run(healthy(url, 200, 20))  # warm up
        alone = asyncio.run(healthy(url, args.requests, args.clients))
        hung, codes = asyncio.run(with_hang(url, args.requests, args.clients,
                                            args.hang_clients))
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)
        up_proc.terminate()
    p99_alone, p99_hung = np.percentile(alone, 99), np.percentile(hung, 99)
    print(f"healthy model, {args.requests} requests from {args.clients} clients:")
    print(f"  alone:                     p50 {np.percentile(alone, 50):7.1f} ms   "
          f"p99 {p99_alone:7.1f} ms")
    print(f"  beside {args.hang_clients} clients of a hang: p50 {np.percentile(hung, 50):7.1f} ms"
          f"   p99 {p99_hung:7.1f} ms")
    print(f"  p99 ratio: {p99_hung / p99_alone:.2f} (target <= 2); the hanging model's "
          f"answers by status: {codes}")


if __name__ == "__main__":
    main()
