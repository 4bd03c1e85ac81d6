"""Decision latency of the kNN and classifier routers, embedding included.

    python bench/router_latency.py [--data ../shared/data]

Trained on RouterBench's ARC-Challenge train split. One query at a time: fresh texts (never
embedded before, so the embedding is computed) and repeated texts (embedding cache hit);
p50 and p99 over 300 decisions. Batched: queries per second deciding 2,000 fresh prompts
in batches of 256. Targets: p50 under 5 ms and over 1,000 queries/s batched. Each router
runs on MiniLM (the default) and on the hashing embedder (``/hashing``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llmtriage.backends.base import Queries
from llmtriage.data import load_table
from llmtriage.policies.base import State
from llmtriage.policies.routers import ClassifierRouter, KNNRouter
from llmtriage.signals.embedder import HashingEmbedder, MiniLMEmbedder


def fresh_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ("what how why which river planet code python sum product capital city year "
             "energy model cost answer prime number list sort graph tree").split()
    return [" ".join(rng.choice(words, size=rng.integers(8, 20))) + f" #{seed}-{i}?"
            for i in range(n)]


def decide(router, texts: list[str]) -> np.ndarray:
    queries = Queries.from_texts(texts)
    return router.step(State.start(router.models_, queries)).call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    table = load_table(f"routerbench:{args.data}/routerbench", task="arc-challenge")
    train = table.split("train")
    print(f"{'router':<17} {'p50 ms':>7} {'p99 ms':>7} {'p50 ms (cached)':>16} "
          f"{'batched q/s':>12} {'batched q/s cached':>19}")
    setups = [(make(), embedder) for embedder in (lambda: MiniLMEmbedder(threads=2),
                                                   HashingEmbedder)
              for make in (KNNRouter, ClassifierRouter)]
    for router, embedder in setups:
        router.fit(train, embedder=embedder())  # no disk cache: fresh runs
        decide(router, ["warm up"])
        times = []
        for text in fresh_texts(300, 1):
            t0 = time.perf_counter()
            decide(router, [text])
            times.append((time.perf_counter() - t0) * 1000)
        cached = []
        for text in fresh_texts(300, 1):
            t0 = time.perf_counter()
            decide(router, [text])
            cached.append((time.perf_counter() - t0) * 1000)
        batch = fresh_texts(2000, 2)
        t0 = time.perf_counter()
        for start in range(0, len(batch), 256):
            decide(router, batch[start : start + 256])
        qps = len(batch) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for start in range(0, len(batch), 256):  # the same prompts again: embeddings cached
            decide(router, batch[start : start + 256])
        qps_cached = len(batch) / (time.perf_counter() - t0)
        print(f"{router.curve_name:<17} {np.percentile(times, 50):7.2f} "
              f"{np.percentile(times, 99):7.2f} {np.percentile(cached, 50):16.2f} {qps:12.0f} "
              f"{qps_cached:19.0f}")


if __name__ == "__main__":
    main()
