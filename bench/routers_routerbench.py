"""Routers on RouterBench (train on *_train, report on *_test): AIQ per task.

    python bench/routers_routerbench.py [--data ../shared/data] [--out out/routers]

For each task: the AIQ of every router, of the single models' hull (the "zero router") and
of the oracle, all over the single models' cost range; the share of the zero-router-to-oracle
gap the best router recovers. kNN and logistic also run on the hashing embedder
(``/hashing``: no model, ~100,000 queries/s) beside MiniLM. With --out, a plot and JSON
records per task. Embeddings are cached (~/.cache/llmtriage/embeddings), so the first run
is the slow one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmtriage.data import load_table
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import write_json
from llmtriage.policies.routers import ClassifierRouter, EloRouter, KNNRouter, MFRouter
from llmtriage.signals.embedder import HashingEmbedder


def routers():
    return [KNNRouter(), ClassifierRouter(), ClassifierRouter(kind="mlp"), MFRouter(),
            EloRouter(), KNNRouter().with_embedder(HashingEmbedder()),
            ClassifierRouter().with_embedder(HashingEmbedder())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(f"{'task':<14} {'zero router':>11} {'oracle':>7} " + " ".join(
        f"{p.curve_name:>16}" for p in routers()) + "   best router, gap recovered")
    for task in ("arc-challenge", "mbpp", "winogrande"):
        table = load_table(f"routerbench:{args.data}/routerbench", task=task)
        policies = [p for p in default_policies(table) if p.name in ("single", "oracle")]
        result = compare(table, policies + routers(), bootstrap=200)
        learned = [c for c in result.curves
                   if c.family in ("knn", "logistic", "mlp", "mf", "sw-ranking")]
        oracle = result.curve("oracle").aiq
        best = max(learned, key=lambda c: c.aiq)
        gap = (best.aiq - result.zero_router_aiq) / (oracle - result.zero_router_aiq)
        verdict = "beats" if best.aiq > result.zero_router_aiq else "does NOT beat"
        print(f"{task:<14} {result.zero_router_aiq:11.4f} {oracle:7.4f} "
              + " ".join(f"{c.aiq:16.4f}" for c in learned)
              + f"   {best.name} {verdict} the zero router, {gap:+.1%} of the gap to the oracle")
        if args.out:
            write_json(result, args.out / f"routerbench-{task}.json")
            plot(result, args.out / f"routerbench-{task}.png")


if __name__ == "__main__":
    main()
