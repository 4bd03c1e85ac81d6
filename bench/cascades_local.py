"""Cascades on the local ladder and the probe set, on outcomes collected live.

    triage collect --out out/ladder-full.csv          # all 307 probes x 3 models, ~7 min
    python bench/cascades_local.py [--table out/ladder-full.csv] [--splits 5] [--plot F]

The table was recorded from the live models by `triage collect`; replaying it makes exactly
the decisions the live policies make (tests/test_collect.py holds the two against each
other). For several random splits into a calibration half and a test half (the test half is
never used for calibration), each policy is set to its cheapest setting whose
calibration-half quality reaches the 1.5B model's, then measured on the test half against the
1.5B model alone (quality, mean latency, mean energy):
- the calibrated 3-rung cascade SmolLM2 > Qwen-0.5B > Qwen-1.5B and the 2-rung 0.5B > 1.5B
  (per-model isotonic calibration of the mean answer-token logprob);
- cascade routing on a logistic router's predictions.
Then Learn-Then-Test for an error target (epsilon 0.2, delta 0.1): the certified threshold and
whether the test-half error stayed below epsilon; and the whole curve of cascades and routers
against the three single models on split 0 (with --plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console

from llmtriage.data import load_table
from llmtriage.evaluation.cascade_search import learn_then_test, outcomes
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.evaluate import evaluate, sweep
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import render
from llmtriage.policies import SingleModel
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.routers import ClassifierRouter

LADDER = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def cheapest_reaching(policy, calib, target: float):  # noqa: ANN001, ANN201
    """The cheapest (by latency) setting of the policy's curve reaching ``target`` quality."""
    values = policy.grid(calib)
    points = sweep(policy, values, calib)
    ok = [(p.latency_ms, v) for p, v in zip(points, values, strict=True) if p.quality >= target]
    value = min(ok)[1] if ok else values[int(np.argmax([p.quality for p in points]))]
    return policy.with_params(**{policy.tradeoff: value})


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
    print(f"{'split':>5} {'policy':<22} {'quality':>8} {'latency ms':>11} {'energy J':>9} "
          f"{'calls/q':>8}  vs 1.5B alone")
    tally: dict[str, int] = {}
    held = 0
    for seed in range(args.splits):
        mask = np.random.default_rng(seed).random(table.n_prompts) < 0.5
        split = table.with_splits(np.where(mask, "test", "train").astype(object))
        calib, test = split.split("train"), split.split("test")
        target = calib.mean_quality()[large]
        alone = evaluate(SingleModel(large), test, bootstrap=0)
        print(f"{seed:5d} {'qwen2.5-coder-1.5b':<22} {alone.quality:8.3f} "
              f"{alone.latency_ms:11.0f} {alone.energy_j:9.1f} {1.0:8.2f}")
        candidates = {
            "cascade 3 rungs": CalibratedCascade(LADDER),
            "cascade 0.5B > 1.5B": CalibratedCascade(LADDER[1:]),
            "cascade routing": CascadeRouter(ClassifierRouter()),
        }
        for name, policy in candidates.items():
            chosen = cheapest_reaching(policy.fit(calib), calib, target)
            p = evaluate(chosen, test, bootstrap=0)
            wins = (p.quality >= alone.quality and p.latency_ms < alone.latency_ms
                    and p.energy_j < alone.energy_j)
            tally[name] = tally.get(name, 0) + wins
            print(f"{'':5} {name:<22} {p.quality:8.3f} {p.latency_ms:11.0f} {p.energy_j:9.1f} "
                  f"{p.calls_per_query:8.2f}  {'better' if wins else 'not better'}")
        cascade = CalibratedCascade(LADDER).fit(calib)
        ltt = learn_then_test(cascade, calib, args.epsilon, delta=0.1)
        quality, _ = outcomes(cascade.with_params(threshold=ltt.threshold), test)
        error = float((quality < 0.5).mean())
        held += error <= args.epsilon
        print(f"{'':5} LTT (epsilon {args.epsilon}, delta 0.1): threshold {ltt.threshold:.3f} "
              f"{'certified' if ltt.certified else 'NOT certified'}, calibration error "
              f"{ltt.calibration_error:.3f}, test error {error:.3f}")
    print("at least the 1.5B model's quality at lower latency and energy: "
          + ", ".join(f"{k} {v}/{args.splits}" for k, v in tally.items()))
    print(f"LTT: test error <= {args.epsilon} on {held}/{args.splits} splits (delta 0.1)")
    split = table.with_splits(np.where(np.random.default_rng(0).random(table.n_prompts) < 0.5,
                                       "test", "train").astype(object))
    policies = [p for p in default_policies(split) if p.name != "calibrated-cascade"]
    result = compare(split, [*policies, CalibratedCascade(LADDER), CalibratedCascade(LADDER[1:]),
                             CascadeRouter(ClassifierRouter()), ClassifierRouter()],
                     bootstrap=200)
    render(result, Console(width=150))
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")


if __name__ == "__main__":
    main()
