"""Collect throughput with one versus several concurrent requests per model.

    python bench/collect_throughput.py [--probes 24] [--concurrency 1 4]

For each model of the local ladder and each concurrency level, answers the same probes
(a fresh journal each time) and reports answers per second and generated tokens per second.
With several requests in flight llama.cpp decodes them as one batch, which on a CPU
raises throughput at the price of each answer's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import pandas as pd

from llmtriage.backends.catalog import default_catalog
from llmtriage.backends.pool import ModelPool
from llmtriage.collection import collect, probe_request, sample
from llmtriage.probes import builtin_probes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=24)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    probes = sample(builtin_probes(), args.probes)
    print(f"{'model':<20} {'in flight':>9} {'answers/s':>10} {'tokens/s':>9} "
          f"{'p50 latency ms':>15} {'accuracy':>9}")
    for name in default_catalog().names():
        for k in args.concurrency:
            spec = default_catalog().spec(name).model_copy(update={"max_concurrency": k})
            catalog = default_catalog().model_copy(update={"models": [spec]})
            pool = ModelPool(catalog)
            asyncio.run(pool.complete(name, probe_request(probes[0])))  # load, warm up
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "t.csv"
                t0 = time.perf_counter()
                asyncio.run(collect(pool, probes, out))
                elapsed = time.perf_counter() - t0
                frame = pd.read_csv(out)
            print(f"{name:<20} {k:>9} {len(frame) / elapsed:10.2f} "
                  f"{frame['tokens_out'].sum() / elapsed:9.1f} "
                  f"{frame['latency_ms'].median():15.0f} {frame['quality'].mean():9.2f}")


if __name__ == "__main__":
    main()
