"""Does calibrating a cascade's confidence per task pay? Task-aware against pooled.

    triage collect --out out/ladder-full.csv          # all 307 probes x 3 models
    python bench/task_calibration.py [--table out/ladder-full.csv] [--price-ratio 10]
                                     [--splits 20]

The calibrated cascade maps each rung's raw confidence (the mean answer-token logprob) to
P(right). Pooled, one map per model is fitted on every task of the calibration split;
task-aware (``task_prior_rows``, the default), each task gets its own map blended with the
pooled one by its share of evidence, and a query of a task not seen gets the pooled map.
Both are the real ``CalibratedCascade`` and ``CascadeRouter``, fitted on the train rows and
replayed by the loop that serves on the held-out rows. Each is scored by the test AUC of its
calibrated confidence per model (pooled over the held-out tasks: what one threshold sees),
by the cascades it makes (the AIQ over cost of the envelope of every cost-ordered ladder of
two or three models at every threshold of its grid) and by cascade routing's curve over its
lams (a kNN router on the hashing embedder), each as a share of the single models'
hull-to-oracle gap. On the table's test split, on ``--splits`` random 70/30 splits of it,
and leave-one-task-out (a held-out task is not seen, so both must agree there).

``--price-ratio R`` re-prices the ladder R times dearer a tier (the recorded prices differ
by 2.3 times from end to end, too little for any cascade to pay: API ladders span 100
times and more); the confidences and outcomes are the recorded ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import warnings

import numpy as np

from llmtriage import metrics
from llmtriage.data import load_table
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.routers import KNNRouter
from llmtriage.policies.search.crossval import replay_outcomes
from llmtriage.signals.calibration import TASK_PRIOR_ROWS
from llmtriage.signals.embedder import HashingEmbedder

VARIANTS = {"pooled": None, "task-aware": TASK_PRIOR_ROWS}


def gap(test: OutcomeTable, points: list[tuple[float, float]]) -> float:
    """The AIQ over cost of the points and the single models, as a share of the single
    models' hull-to-oracle gap on ``test``."""
    cost, quality = test.cost_usd, test.quality
    single_c, single_q = cost.mean(axis=0), quality.mean(axis=0)
    span = (float(single_c.min()), float(single_c.max()))
    hull = metrics.aiq(single_c, single_q, span)
    rows = np.arange(test.n_prompts)
    cheapest_right = np.argmax(quality[:, np.argsort(single_c)] >= 0.5, axis=1)
    best = np.argsort(single_c)[cheapest_right]
    oracle = metrics.aiq(np.r_[single_c, cost[rows, best].mean()],
                         np.r_[single_q, quality.max(axis=1).mean()], span)
    xs, ys = np.array([*zip(single_c, single_q, strict=True), *points]).T
    return (metrics.aiq(xs, ys, span) - hull) / max(oracle - hull, 1e-12)


def routing_gap(table: OutcomeTable, fit: np.ndarray, held: np.ndarray,
                prior: float | None) -> float:
    """Gap share of cascade routing (a kNN router on the hashing embedder) over its lams."""
    train, test = table.take(fit), table.take(held)
    router = KNNRouter(k=10).with_embedder(HashingEmbedder())
    policy = CascadeRouter(router, task_prior_rows=prior).fit(train)
    points = []
    for lam in policy.grid(train):
        out = replay_outcomes(policy.with_params(lam=lam), test)
        points.append((out["cost_usd"].mean(), out["quality"].mean()))
    return gap(test, points)


def scores(table: OutcomeTable, fit: np.ndarray, held: np.ndarray, prior: float | None
           ) -> tuple[float, list[float]]:
    """Gap share of the cascades' envelope and AUC per model, on ``held``."""
    from sklearn.metrics import roc_auc_score

    train, test = table.take(fit), table.take(held)
    order = [table.models[j] for j in np.argsort(table.cost_usd.mean(axis=0))]
    points, aucs = [], []
    for size in range(2, len(order) + 1):
        for ladder in itertools.combinations(order, size):
            cascade = CalibratedCascade(list(ladder), task_prior_rows=prior).fit(train)
            for t in cascade.grid(train):
                out = replay_outcomes(cascade.with_params(threshold=t), test)
                points.append((out["cost_usd"].mean(), out["quality"].mean()))
            if size == len(order):
                for m in ladder:  # every model's calibrated confidence on the held rows
                    right = test.quality[:, test.model_index(m)] >= 0.5
                    raw = test.confidence[:, test.model_index(m)]
                    cal = cascade.calibrators_[m]
                    p = cal(raw, test.tasks)
                    aucs.append(roc_auc_score(right, p) if 0 < right.mean() < 1 else np.nan)
    return gap(test, points), aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", default="out/ladder-full.csv")
    parser.add_argument("--price-ratio", type=float, default=None)
    parser.add_argument("--splits", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    table = load_table(f"long:{args.table}")
    if args.price_ratio:
        rank = np.argsort(np.argsort(table.cost_usd.mean(axis=0)))
        cost = table.cost_usd / table.cost_usd.mean(axis=0) * args.price_ratio ** rank
        table = dataclasses.replace(table, cost_usd=cost)
    by_cost = [table.models[j] for j in np.argsort(table.cost_usd.mean(axis=0))]
    print(f"{table.n_prompts} prompts; models by cost {by_cost}; price ratio "
          f"{args.price_ratio or 'as recorded'}; AUC per model in that order")
    rng = np.random.default_rng(0)
    cases = [("test split", np.flatnonzero(table.splits == "train"),
              np.flatnonzero(table.splits == "test"))]
    for i in range(args.splits):
        perm = rng.permutation(table.n_prompts)
        cut = int(0.7 * table.n_prompts)
        cases.append((f"random split {i}", np.sort(perm[:cut]), np.sort(perm[cut:])))
    cases += [(f"held out {t}", np.flatnonzero(table.tasks != t),
               np.flatnonzero(table.tasks == t)) for t in sorted(set(table.tasks.tolist()))]
    summary: dict[str, list] = {v: [] for v in VARIANTS}
    for label, fit, held in cases:
        line = [f"{label:26s} n={len(held):4d}"]
        for name, prior in VARIANTS.items():
            share, aucs = scores(table, fit, held, prior)
            routed = routing_gap(table, fit, held, prior)
            if label.startswith("random"):
                summary[name].append([share, routed, *aucs])
            line.append(f"{name}: cascades {100 * share:+.1f}%, cascade routing "
                        f"{100 * routed:+.1f}%, AUC "
                        + "/".join("-" if np.isnan(a) else f"{a:.3f}" for a in aucs))
        print("  ".join(line), flush=True)
    if args.splits:
        print(f"mean over {args.splits} random splits:")
        for name, rows in summary.items():
            mean = np.nanmean(np.array(rows), axis=0)
            print(f"  {name}: cascades {100 * mean[0]:+.1f}%, cascade routing "
                  f"{100 * mean[1]:+.1f}%, AUC " + "/".join(f"{a:.3f}" for a in mean[2:]))


if __name__ == "__main__":
    main()
