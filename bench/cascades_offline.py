"""Cascades on recorded outcomes: RouterBench with a learned answer scorer.

    python bench/cascades_offline.py [--data ../shared/data]

Per RouterBench task: the ladder is the train split's Pareto-optimal single models (cheapest
first, at most three); a FrugalGPT-style scorer of (query, answer) pairs, trained on the
recorded responses (out-of-fold on train), gives each answer a confidence, calibrated per
model (isotonic) on the train split. The calibrated cascade's AIQ on the test split is shown
against the best router of the routers issue, the zero router and the oracle.
The scorer's own cost is an embedding of the answer (a few ms of CPU, no API call); it is not
added to the cost axis.
"""

from __future__ import annotations

import argparse

from llmtriage.data import load_table
from llmtriage.evaluation.compare import compare, default_policies, pareto_ladder
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.routers import ClassifierRouter, EloRouter, KNNRouter
from llmtriage.signals.scorer import with_learned_confidence


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    print(f"{'task':<14} {'ladder':<58} {'cascade':>8} {'best router':>12} {'zero':>7} "
          f"{'oracle':>7}")
    for task in ("arc-challenge", "mbpp", "winogrande"):
        table = load_table(f"routerbench:{args.data}/routerbench", task=task)
        ladder = pareto_ladder(table.split("train"))
        ladder = [ladder[0], ladder[len(ladder) // 2], ladder[-1]] if len(ladder) > 3 else ladder
        scored = with_learned_confidence(table, ladder)
        base = [p for p in default_policies(scored) if p.name in ("single", "oracle")]
        routers = [KNNRouter(), ClassifierRouter(), EloRouter()]
        result = compare(scored, [*base, *routers, CalibratedCascade(ladder)], bootstrap=0)
        best = max((c for c in result.curves if c.family in ("knn", "classifier", "sw-ranking")),
                   key=lambda c: c.aiq)
        short = " > ".join(m.rsplit("/", 1)[-1] for m in ladder)
        print(f"{task:<14} {short:<58} {result.curve('calibrated-cascade').aiq:8.4f} "
              f"{best.aiq:8.4f} ({best.name}) {result.zero_router_aiq:7.4f} "
              f"{result.curve('oracle').aiq:7.4f}")
        # Same three models only: router, cascade and cascade routing over one cost range.
        three = scored.select_models(ladder)
        singles = [p for p in default_policies(three) if p.name == "single"]
        trio = compare(three, [*singles, ClassifierRouter(), CalibratedCascade(ladder),
                               CascadeRouter(ClassifierRouter())], bootstrap=0)
        print(f"{'':<14} on these 3 models: zero router {trio.zero_router_aiq:.4f}, router "
              f"{trio.curve('logistic').aiq:.4f}, cascade "
              f"{trio.curve('calibrated-cascade').aiq:.4f}, cascade routing "
              f"{trio.curve('cascade-routing').aiq:.4f}")


if __name__ == "__main__":
    main()
