"""Does `triage fit --objective match=X` land within X of the best single model on prompts it
has not seen?

    python bench/search_match.py [--data ../shared/data] [--splits 10] [--match 0.01]
        [--ladder out/ladder-full.csv]

`match=X` asks for the cheapest policy whose cross-validated quality on the train split is
at least the best single model's minus X: a point estimate, so a choice that barely meets
it there is a coin flip on new prompts (the winner's curse), where `delta=D` certifies it
instead (bench/search_guarantee.py). On RouterBench ARC-Challenge (11 models), ZeroEval
GSM8K (41) and, where given, the ladder's recording, over random 60/40 splits: the search
chooses on 60% (routers on the hashing embedder), and the choice is replayed on the other
40%. Printed per split and in all: the test quality against the best single model's on the
test prompts, and the cost as a share of that model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmtriage.data import load_table
from llmtriage.data.table import TEST, TRAIN
from llmtriage.policies.search import Objective, replay_outcomes, search

FAMILIES = ("single", "knn", "logistic", "agreement-cascade", "calibrated-cascade",
            "task-mean")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--match", type=float, default=0.01)
    ap.add_argument("--ladder", default="out/ladder-full.csv")
    args = ap.parse_args()
    sets = {"routerbench:arc-challenge": load_table(f"routerbench:{args.data}/routerbench",
                                                    task="arc-challenge"),
            "zeroeval:gsm": load_table(f"zeroeval:{args.data}/zeroeval", task="gsm")}
    if Path(args.ladder).is_file():
        sets["ladder"] = load_table(args.ladder)
    goal = Objective.parse(f"match={args.match}")
    for name, table in sets.items():
        families = [f for f in FAMILIES if f != "calibrated-cascade" or table.has("confidence")]
        below, shares = [], []
        for seed in range(args.splits):
            held = np.random.default_rng(100 + seed).permutation(table.n_prompts) % 10 < 4
            split = table.with_splits(np.where(held, TEST, TRAIN).astype(object))
            train, test = split.split(TRAIN), split.split(TEST)
            result = search(train, goal, families, seed=seed, embedder="hashing")
            outcome = replay_outcomes(result.policy, test)
            quality = test.quality.mean(axis=0)
            best = int(np.argmax(quality))
            below.append(float(outcome["quality"].mean() - quality[best]))
            shares.append(float(outcome["cost_usd"].mean() / test.cost_usd[:, best].mean()))
            print(f"  {name} split {seed}: {result.policy.label[:60]:60s} test quality "
                  f"{below[-1]:+.3f} against the best single model's, at {shares[-1]:.0%} of "
                  "its cost", flush=True)
        gap = np.array(below)
        print(f"{name}: within {args.match} of the best single model on "
              f"{int((gap >= -args.match - 1e-9).sum())}/{len(gap)} test splits; mean "
              f"{gap.mean():+.3f}, worst {gap.min():+.3f}; cost {np.median(shares):.0%} of "
              f"its (median; {min(shares):.0%}-{max(shares):.0%})", flush=True)


if __name__ == "__main__":
    main()
