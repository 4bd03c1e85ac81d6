"""Time loading every shared data set (target: all of them in under 10 seconds), then a
long-format log of about a million rows with failed calls in it, read with ``--missing drop``.

    python bench/load_all.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data import load_table
from llmtriage.data.loaders.generic import write as write_long

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
    holes(args.data)


def holes(data: str, copies: int = 18, failed: float = 0.01) -> None:
    """LLMRouter's outcomes as a long log, its prompts repeated under new ids ``copies``
    times, with a share ``failed`` of the rows (calls) removed at random."""
    with tempfile.TemporaryDirectory() as tmp:
        one = pd.read_csv(write_long(load_table(f"llmrouter:{data}/llmrouter"),
                                     Path(tmp) / "one.csv"))
        frames = [one.assign(prompt_id=one["prompt_id"].astype(str) + f"#{k}")
                  for k in range(copies)]
        whole = pd.concat(frames, ignore_index=True)
        whole.to_parquet(Path(tmp) / "whole.parquet")
        t0 = time.perf_counter()
        load_table(str(Path(tmp) / "whole.parquet"))
        complete = time.perf_counter() - t0
        log = whole[np.random.default_rng(0).random(len(whole)) >= failed]
        log.to_parquet(Path(tmp) / "log.parquet", index=False)
        t0 = time.perf_counter()
        table = load_table(str(Path(tmp) / "log.parquet"), missing="drop")
        dt = time.perf_counter() - t0
    dropped = next(n for n in table.notes if n.startswith("dropped"))
    print(f"a long log of {len(log):,} rows, {failed:.0%} of calls failed, --missing drop: "
          f"{table.n_prompts} prompts x {table.n_models} models in {dt:.2f} s ({dropped}); "
          f"the same log with no call failed ({len(whole):,} rows) in {complete:.2f} s")


if __name__ == "__main__":
    main()
