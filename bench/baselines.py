"""For every shared data set: single models, oracle, random mixing and (where the data
records a confidence) a confidence cascade, evaluated on the test split.

    python bench/baselines.py [--data ../shared/data] [--out out/baselines]

Prints one table per data set and task, the AIQ of each curve against the single models'
hull (RouterBench's "zero router"), and whether the oracle beats every single model.
With --out, writes each comparison's JSON records and plot there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from llmtriage.data import load_table
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import render, write_json

SETS = [
    ("routerbench", "arc-challenge"), ("routerbench", "mbpp"), ("routerbench", "winogrande"),
    ("routellm", "mmlu"), ("routellm", "gsm8k"), ("routellm", "mt-bench"),
    ("zeroeval", "gsm"), ("zeroeval", "crux"), ("zeroeval", "math-l5"),
    ("llmrouter", None), ("arena_bench_v1", None),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    console = Console(width=150)
    verdicts = []
    for folder, task in SETS:
        table = load_table(f"{args.data}/{folder}", task=task)
        result = compare(table, default_policies(table), bootstrap=200)
        render(result, console)
        if not table.has("confidence"):
            console.print("no confidence recorded in this data set: no confidence cascade")
        verdicts.append((table.name, result.oracle_verdict(), result))
        if args.out:
            stem = table.name.replace(":", "-")
            write_json(result, args.out / f"{stem}.json")
            plot(result, args.out / f"{stem}.png")
        console.print()
    console.rule("summary")
    for name, verdict, result in verdicts:
        oracle = result.curve("oracle").aiq
        console.print(f"{name:<24} zero-router AIQ {result.zero_router_aiq:.4f}  "
                      f"oracle AIQ {oracle:.4f}  {verdict}", highlight=False)


if __name__ == "__main__":
    main()
