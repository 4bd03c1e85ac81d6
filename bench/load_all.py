"""Time loading every shared data set (target: all of them in under 10 seconds).

    python bench/load_all.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time

from llmtriage.data import load_table

SOURCES = [
    ("routerbench", None), ("routellm", None), ("zeroeval", "gsm"), ("zeroeval", "crux"),
    ("zeroeval", "math-l5"), ("llmrouter", None), ("arena_bench_v1", None),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    total = 0.0
    outcomes = 0
    for folder, task in SOURCES:
        t0 = time.perf_counter()
        table = load_table(f"{args.data}/{folder}", task=task)
        dt = time.perf_counter() - t0
        total += dt
        outcomes += table.n_prompts * table.n_models
        print(f"{table.name:<18} {table.n_prompts:>6} prompts x {table.n_models:>2} models "
              f"{dt:6.2f} s")
    print(f"all {len(SOURCES)} tables, {outcomes:,} outcomes, in {total:.2f} s; "
          f"target < 10 s: {'MET' if total < 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
