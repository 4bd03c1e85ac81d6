"""What Serve's batching buys the routers' shared embedder deployment.

    python bench/ray_embedder.py [--texts 512] [--concurrency 64]

Starts a local Ray instance (2 CPUs), runs ``triage-embedder`` (the deployment ``triage
serve --ray`` runs: MiniLM behind ``@serve.batch``, one text per call) with
``embed_batch`` 1 (no batching) and 16 (the default), and sends ``--texts`` fresh texts,
``--concurrency`` calls in flight, through a handle, as gateway replicas deciding for
concurrent requests do. Reported: texts embedded per second, the mean batch Serve formed,
and per-call latency p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
import ray
from ray import serve
from rich.console import Console
from rich.table import Table

from llmtriage.serving.ray_serve import EMBEDDER, _deployments


async def drive(handle, texts: list[str], concurrency: int) -> list[float]:  # noqa: ANN001
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(text: str) -> None:
        async with gate:
            began = time.perf_counter()
            await handle.embed.remote(text)
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(one(t) for t in texts))
    return latencies


def measure(batch: int, texts: list[str], concurrency: int) -> dict:
    _, embedder_server = _deployments(serve)
    app = serve.deployment(embedder_server, name=EMBEDDER, ray_actor_options={"num_cpus": 1},
                           max_ongoing_requests=max(64, 4 * batch)).bind(128, batch, 0.005)
    handle = serve.run(app, name=f"bench-{batch}", route_prefix=None)
    asyncio.run(drive(handle, [f"warm up {i}" for i in range(32)], concurrency))
    before = handle.counts.remote().result()
    began = time.perf_counter()
    latencies = asyncio.run(drive(handle, texts, concurrency))
    seconds = time.perf_counter() - began
    after = handle.counts.remote().result()
    serve.delete(f"bench-{batch}")
    batches = after["batches"] - before["batches"]
    return {"per_s": len(texts) / seconds, "mean_batch": len(texts) / max(batches, 1),
            "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    words = ["route", "model", "cheap", "query", "answer", "cloud", "device", "latency",
             "budget", "python", "capital", "number", "explain", "code", "sum", "list"]
    texts = [" ".join(rng.choice(words, 12)) + f" #{i}" for i in range(args.texts)]
    # A new local Ray instance writes an auth token to ~/.ray/auth_token, which clusters
    # started later on this machine then require; remove it if this run made it.
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"port": 0})
    table = Table(title=f"triage-embedder: {args.texts} fresh texts, {args.concurrency} "
                        "calls in flight, one replica (1 CPU) on a 2-CPU Ray instance")
    for col in ("embed_batch", "texts / s", "mean batch", "call p50", "call p99"):
        table.add_column(col)
    try:
        for batch in (1, 16):
            r = measure(batch, texts, args.concurrency)
            table.add_row(str(batch), f"{r['per_s']:.0f}", f"{r['mean_batch']:.1f}",
                          f"{r['p50']:.0f} ms", f"{r['p99']:.0f} ms")
    finally:
        serve.shutdown()
        ray.shutdown()
        if not had_token:
            token.unlink(missing_ok=True)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
