"""Does `triage fit --objective quality=Q,delta=D` keep its promise on unseen prompts?

    python bench/search_guarantee.py [--data ../shared/data] [--splits 20] [--delta 0.05]

On two data sets (RouterBench ARC-Challenge with its 11 models; ZeroEval GSM8K with 41),
20 random halvings: the search chooses on one half (its own cross-validation only), and
the chosen policy is replayed on the other half. The target is a quality just under the
best single model's, so the search has to trade cheap models against it. Printed: how
often the test half meets the target (the promise: at least 1 - delta of the time) and at
what share of the best single model's cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llmtriage.data import load_table
from llmtriage.data.table import TEST, TRAIN
from llmtriage.policies.search import Objective, replay_outcomes, search

FAMILIES = ("single", "knn", "logistic", "agreement-cascade")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--below-best", type=float, default=0.02)
    args = ap.parse_args()
    sets = {"routerbench:arc-challenge": load_table(f"routerbench:{args.data}/routerbench",
                                                    task="arc-challenge"),
            "zeroeval:gsm": load_table(f"zeroeval:{args.data}/zeroeval", task="gsm")}
    for name, table in sets.items():
        quality = table.quality.mean(axis=0)
        best = int(np.argmax(quality))
        target = float(quality[best]) - args.below_best
        goal = Objective("quality", target, delta=args.delta)
        met, shares, seconds = [], [], []
        for seed in range(args.splits):
            halves = np.random.default_rng(seed).permutation(table.n_prompts) % 2 == 0
            split = table.with_splits(np.where(halves, TRAIN, TEST).astype(object))
            train, test = split.split(TRAIN), split.split(TEST)
            started = time.perf_counter()
            result = search(train, goal, FAMILIES, seed=seed)
            seconds.append(time.perf_counter() - started)
            outcome = replay_outcomes(result.policy, test)
            met.append(outcome["quality"].mean() >= target)
            shares.append(outcome["cost_usd"].mean() / np.nanmean(test.cost_usd[:, best]))
            print(f"  {name} split {seed:2d}: {result.policy.label[:70]:70s} test quality "
                  f"{outcome['quality'].mean():.3f} (target {target:.3f}), "
                  f"{shares[-1]:.0%} of the best model's cost", flush=True)
        print(f"{name}: target {goal} ({table.models[best]} {quality[best]:.3f} - "
              f"{args.below_best}); met on {sum(met)}/{len(met)} test halves (promise: "
              f">= {1 - args.delta:.0%}); cost {np.median(shares):.0%} of the best model's "
              f"(median; {min(shares):.0%}-{max(shares):.0%}); {np.mean(seconds):.0f} s per "
              "search", flush=True)


if __name__ == "__main__":
    main()
