"""Cascades on the local ladder and the probe set, on outcomes collected live.

    triage collect --out out/ladder-full.csv          # all 307 probes x 3 models, ~7 min
    python bench/cascades_local.py [--table out/ladder-full.csv] [--splits 5] [--plot F]

The table was recorded from the live models by `triage collect`; replaying it makes exactly
the decisions the live cascade makes (tests/test_collect.py holds the two against each
other), so each split here is a live run without the wait. For several random splits into a
calibration half and a test half (the test half is never used for calibration):

1. the calibrated cascade (SmolLM2 > Qwen-0.5B > Qwen-1.5B, per-model isotonic calibration of
   the mean answer-token logprob) at the cheapest shared threshold whose calibration-half
   quality reaches the 1.5B model's, against the 1.5B model alone on the test half: quality,
   mean latency, mean energy;
2. Learn-Then-Test for an error target epsilon (delta = 0.1): the certified threshold, and
   whether the test-half error stayed below epsilon.
Then the whole curve of cascades and routers against the three single models (split 0).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from llmtriage.data import load_table
from llmtriage.evaluation.cascade_search import learn_then_test, outcomes
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.evaluate import evaluate
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import render
from llmtriage.policies import SingleModel
from llmtriage.policies.cascades import CalibratedCascade
from llmtriage.policies.routers import ClassifierRouter, KNNRouter

LADDER = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def cheapest_reaching(cascade: CalibratedCascade, calib, target: float) -> float:
    """The lowest shared threshold (fewest escalations) whose calibration quality >= target."""
    best = 1.01
    for t in np.linspace(1.0, 0.0, 41):
        quality, _ = outcomes(cascade.with_params(threshold=float(t)), calib)
        if quality.mean() >= target:
            best = float(t)
        else:
            break
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="out/ladder-full.csv")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--epsilon", type=float, default=0.2)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    table = load_table(args.table).select_models(LADDER)
    large = LADDER[-1]
    print(f"{table.n_prompts} probes x {table.n_models} models; accuracy "
          + ", ".join(f"{m} {q:.3f}" for m, q in table.mean_quality().items()))
    print(f"{'split':>5} {'threshold':>9} {'quality':>8} {'1.5B':>6} {'latency ms':>11} "
          f"{'1.5B ms':>8} {'energy J':>9} {'1.5B J':>7} {'calls/q':>8} | "
          f"{'LTT thr':>7} {'test err':>8} {'held':>5}")
    held = 0
    wins = 0
    for seed in range(args.splits):
        test_mask = np.random.default_rng(seed).random(table.n_prompts) < 0.5
        split = replace(table, splits=np.where(test_mask, "test", "train").astype(object))
        calib, test = split.split("train"), split.split("test")
        cascade = CalibratedCascade(LADDER).fit(calib)
        target = calib.mean_quality()[large]
        chosen = cascade.with_params(threshold=cheapest_reaching(cascade, calib, target))
        point = evaluate(chosen, test, bootstrap=0)
        alone = evaluate(SingleModel(large), test, bootstrap=0)
        ok = (point.quality >= alone.quality and point.latency_ms < alone.latency_ms
              and point.energy_j < alone.energy_j)
        wins += ok
        ltt = learn_then_test(cascade, calib, args.epsilon, delta=0.1)
        test_quality, _ = outcomes(cascade.with_params(threshold=ltt.threshold), test)
        test_error = float((test_quality < 0.5).mean())
        held += test_error <= args.epsilon
        print(f"{seed:5d} {chosen.threshold:9.3f} {point.quality:8.3f} {alone.quality:6.3f} "
              f"{point.latency_ms:11.0f} {alone.latency_ms:8.0f} {point.energy_j:9.1f} "
              f"{alone.energy_j:7.1f} {point.calls_per_query:8.2f} | {ltt.threshold:7.3f} "
              f"{test_error:8.3f} {'yes' if test_error <= args.epsilon else 'NO':>5}")
    print(f"cascade at least as good as the 1.5B model, faster and on less energy: "
          f"{wins}/{args.splits} splits; LTT guarantee (error <= {args.epsilon}, delta 0.1) "
          f"held on {held}/{args.splits} test halves")
    split = replace(table, splits=np.where(np.random.default_rng(0).random(table.n_prompts)
                                           < 0.5, "test", "train").astype(object))
    policies = [p for p in default_policies(split) if p.name != "cascade"]
    result = compare(split, [*policies, CalibratedCascade(LADDER), KNNRouter(),
                             ClassifierRouter()], bootstrap=200)
    from rich.console import Console

    render(result, Console(width=150))
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")


if __name__ == "__main__":
    main()
