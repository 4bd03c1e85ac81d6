"""Cascades on the local ladder and the probe set, on outcomes collected live.

    triage collect --out out/ladder-full.csv          # all 307 probes x 3 models, ~7 min
    python bench/cascades_local.py [--table out/ladder-full.csv] [--splits 5] [--plot F]

The table was recorded from the live models by `triage collect`; replaying it makes exactly
the decisions the live policies make (tests/test_collect.py holds the two against each
other). For several random splits into a calibration half and a test half (the test half is
never used for calibration), each policy is set to its cheapest setting whose
quality reaches the 1.5B model's on calibration queries it was not fitted on (5-fold within the
calibration half), then measured on the test half against the
1.5B model alone (quality, mean latency, mean energy):
- the calibrated 3-rung cascade SmolLM2 > Qwen-0.5B > Qwen-1.5B and the 2-rung 0.5B > 1.5B
  (per-model isotonic calibration of the mean answer-token logprob);
- cascade routing on a logistic router's predictions, and that router alone.
Then the bound on any 0.5B > 1.5B cascade: with a perfect, free confidence signal.
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
from llmtriage.data.splits import kfold
from llmtriage.evaluation.cascade_search import learn_then_test, outcomes
from llmtriage.evaluation.compare import compare, default_policies
from llmtriage.evaluation.evaluate import evaluate, sweep
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import render
from llmtriage.policies import SingleModel
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.routers import ClassifierRouter

LADDER = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def cheapest_reaching(make, calib, target: float, folds: int = 5):  # noqa: ANN001, ANN201
    """The policy fitted on ``calib``, set to its cheapest (by latency) setting whose quality
    reaches ``target`` on calibration queries it was not fitted on (k-fold within ``calib``):
    judged on its own fitting data, a learned policy looks better than it is and is set too
    aggressively."""
    policy = make().fit(calib)
    values = policy.grid(calib)
    quality, latency = np.zeros(len(values)), np.zeros(len(values))
    for kept, held in kfold(calib.n_prompts, folds):
        fitted = make().fit(calib.take(kept))
        for i, p in enumerate(sweep(fitted, values, calib.take(held))):
            quality[i] += p.quality * len(held) / calib.n_prompts
            latency[i] += p.latency_ms * len(held) / calib.n_prompts
    ok = np.flatnonzero(quality >= target - 1e-9)
    pick = ok[np.argmin(latency[ok])] if len(ok) else int(np.argmax(quality))
    return policy.with_params(**{policy.tradeoff: values[pick]})


def print_perfect_signal_bound(table) -> None:  # noqa: ANN001
    """What a 0.5B > 1.5B cascade would achieve with a perfect confidence signal (it accepts
    exactly the 0.5B's right answers, at no cost): the most any signal can save here."""
    small, large = table.model_index(LADDER[1]), table.model_index(LADDER[2])
    right = table.quality[:, small] >= 0.5
    quality = np.where(right, table.quality[:, small], table.quality[:, large]).mean()
    print(f"perfect-signal bound, 0.5B > 1.5B (the 0.5B is right on {right.mean():.1%} of "
          f"probes): quality {quality:.3f} vs {table.quality[:, large].mean():.3f} alone")
    for column in ("latency_ms", "energy_j"):
        values = getattr(table, column)
        cascade = (values[:, small] + np.where(right, 0.0, values[:, large])).mean()
        alone = values[:, large].mean()
        print(f"  {column}: {cascade:.1f} vs {alone:.1f} alone ({cascade / alone:.1%}); a 0.5B "
              f"call costs {values[:, small].mean() / alone:.1%} of a 1.5B call on average, "
              f"{values[~right, small].mean() / alone:.1%} where the 0.5B is wrong")


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
            "cascade 3 rungs": lambda: CalibratedCascade(LADDER),
            "cascade 0.5B > 1.5B": lambda: CalibratedCascade(LADDER[1:]),
            "cascade routing": lambda: CascadeRouter(ClassifierRouter()),
            "router (logistic)": ClassifierRouter,
        }
        for name, make in candidates.items():
            chosen = cheapest_reaching(make, calib, target)
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
    print_perfect_signal_bound(table)
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
