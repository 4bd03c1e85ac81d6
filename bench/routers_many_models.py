"""Routers over many models, with prices: ZeroEval GSM8K (41 models) and LLMRouter (9).

    python bench/routers_many_models.py [--data ../shared/data] [--out out/routers]

The cost-quality curve of each router against every single model and the oracle, AIQ over
the single models' cost range, and the router's best point against the best single model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmtriage.data import load_table
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import write_json
from llmtriage.policies.routers import ClassifierRouter, EloRouter, KNNRouter, MFRouter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    for source, task in ((f"zeroeval:{args.data}/zeroeval", "gsm"),
                         (f"llmrouter:{args.data}/llmrouter", None)):
        table = load_table(source, task=task)
        policies = [p for p in default_policies(table) if p.name in ("single", "oracle")]
        routers = [KNNRouter(), ClassifierRouter(), MFRouter(), EloRouter()]
        result = compare(table, [*policies, *routers], bootstrap=200)
        best = max(result.singles, key=lambda p: (p.quality, -p.cost_per_query))
        cheapest_good = min((p for p in result.singles if p.quality >= best.quality - 0.01),
                            key=lambda p: p.cost_per_query)
        print(f"\n{table.name}: {table.n_models} models, {result.split_sizes}")
        print(f"  zero router AIQ {result.zero_router_aiq:.4f}, oracle AIQ "
              f"{result.curve('oracle').aiq:.4f}; best single {best.policy} "
              f"{best.quality:.3f} at ${best.cost_per_query:.2e}/query")
        for curve in result.curves:
            if curve.family not in ("knn", "logistic", "mlp", "mf", "sw-ranking"):
                continue
            top = max(curve.points, key=lambda p: p.quality)
            match = [p for p in curve.points if p.quality >= cheapest_good.quality]
            cheapest = min(match, key=lambda p: p.cost_per_query) if match else None
            line = (f"  {curve.name:<9} AIQ {curve.aiq:.4f}; best point {top.quality:.3f} at "
                    f"${top.cost_per_query:.2e}")
            if cheapest:
                line += (f"; matches {cheapest_good.policy} ({cheapest_good.quality:.3f}) at "
                         f"{cheapest.cost_per_query / cheapest_good.cost_per_query:.0%} of its "
                         f"cost")
            print(line)
        if args.out:
            stem = table.name.replace(":", "-")
            write_json(result, args.out / f"{stem}.json")
            plot(result, args.out / f"{stem}.png")


if __name__ == "__main__":
    main()
