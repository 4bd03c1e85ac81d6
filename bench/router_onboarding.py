"""Onboarding a new model into a trained router from a small labelled sample.

    python bench/router_onboarding.py [--data ../shared/data]

On each RouterBench task: train the logistic router without gpt-4-1106-preview, add it from
n = 50 or 100 labelled training prompts (its other models untouched), and compare the AIQ on
the test split with a router retrained on everything.
"""

from __future__ import annotations

import argparse

import numpy as np

from llmtriage.data import load_table
from llmtriage.evaluation.compare import compare
from llmtriage.policies import SingleModel
from llmtriage.policies.routers import ClassifierRouter

NEW = "gpt-4-1106-preview"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    print(f"{'task':<14} {'full retrain':>12} {'n=50':>8} {'n=100':>8}   (test AIQ)")
    for task in ("arc-challenge", "mbpp", "winogrande"):
        table = load_table(f"routerbench:{args.data}/routerbench", task=task)
        train = table.split("train")
        others = [m for m in table.models if m != NEW]
        singles = [SingleModel(m) for m in table.models]
        full = ClassifierRouter(c=1.0)
        scores = {"full": compare(table, [*singles, full], bootstrap=0).curve("logistic").aiq}
        j = train.model_index(NEW)
        rng = np.random.default_rng(0)
        for n in (50, 100):
            router = ClassifierRouter(c=1.0).fit(train.select_models(others))
            rows = rng.choice(train.n_prompts, size=n, replace=False)
            router.add_model(NEW, train.prompts[rows], train.quality[rows, j],
                             float(train.cost_usd[:, j].mean()))
            # Swept as onboarded, not refitted on the full train split.
            scores[n] = compare(table, [*singles, router], bootstrap=0,
                                fitted=[router]).curve("logistic").aiq
        print(f"{task:<14} {scores['full']:12.4f} {scores[50]:8.4f} {scores[100]:8.4f}")


if __name__ == "__main__":
    main()
