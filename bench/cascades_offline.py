"""Cascades on recorded outcomes: RouterBench with a learned answer scorer, ZeroEval GSM8K
with a learned scorer and with cross-model agreement, and Learn-Then-Test over random splits.

    python bench/cascades_offline.py [--data ../shared/data] [--splits 10] [--out DIR]

1. Per RouterBench task: the ladder is the train split's Pareto-optimal single models
   (cheapest first, at most three); a FrugalGPT-style scorer of (query, answer) pairs,
   trained on the recorded responses (out-of-fold on train), gives each answer a confidence,
   calibrated per model (isotonic) on the train split. The scorer's measured CPU time and
   its price are added to the scored models' cost. The calibrated cascade's AIQ on the test
   split is shown against the best router of the routers issue, the zero router and the
   oracle; then router, cascade and cascade routing on the same three models; then cascade
   routing over all 11 models (every answer scored) against the routers over all 11.
2. ZeroEval GSM8K (41 models, their full answers): the same learned-scorer cascade, and a
   cascade whose first rung is two cheap models answering together, accepted when their
   final answers agree (the pair is chosen on the train split; the second model's cost is
   paid). AIQ over the whole cost range and over the cascade's own range, and quality at the
   cascade's operating cost, against every router and the zero router.
3. Learn-Then-Test for a quality target on each ladder, over ``--splits`` random halvings
   of the scored prompts into calibration and test. The calibration half is halved again:
   one quarter fits the per-model calibrators, the other runs the test (the p-values are
   only valid on data the calibrators did not see). Shown: the target error epsilon (the
   top rung's error on all scored prompts plus 5 points, rounded: a user's fixed target),
   how often a threshold was certified, its test quality, error and cost, and on how many
   splits the test error stayed within epsilon. Delta 0.1 bounds the chance that the true
   error exceeds epsilon; the test half's error is itself an estimate, so "held" may fall
   short of 90% by sampling noise.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from llmtriage import metrics
from llmtriage.data import load_table
from llmtriage.data.table import OutcomeTable
from llmtriage.evaluation.cascade_search import learn_then_test, outcomes
from llmtriage.evaluation.compare import Comparison, PolicyCurve, compare
from llmtriage.evaluation.plots import plot
from llmtriage.policies import SingleModel
from llmtriage.policies.baselines import Oracle
from llmtriage.policies.cascades import CalibratedCascade, CascadeRouter
from llmtriage.policies.defaults import pareto_ladder
from llmtriage.policies.routers import ClassifierRouter, EloRouter, KNNRouter, MFRouter
from llmtriage.signals.agreement import agreement_name, with_agreement
from llmtriage.signals.scorer import with_learned_confidence

ROUTERS = ("knn", "logistic", "mlp", "mf", "sw-ranking")


def three(ladder: list[str]) -> list[str]:
    return [ladder[0], ladder[len(ladder) // 2], ladder[-1]] if len(ladder) > 3 else ladder


def short(models: list[str]) -> str:
    return " > ".join(m.rsplit("/", 1)[-1] for m in models)


def best_router(result: Comparison) -> PolicyCurve:
    return max((c for c in result.curves if c.family in ROUTERS), key=lambda c: c.aiq)


def hull_at(curve_points: list, cost: float) -> float:
    """A curve's quality at ``cost`` on its upper hull (0 below its cheapest point)."""
    hx, hy = metrics.upper_hull(np.array([p.cost_per_query for p in curve_points]),
                                np.array([p.quality for p in curve_points]))
    return float(np.interp(cost, hx, hy, left=0.0))


def routerbench(data: str, out: Path | None) -> dict[str, tuple[OutcomeTable, list[str]]]:
    print(f"{'task':<14} {'ladder':<58} {'cascade':>8} {'best router':>12} {'zero':>7} "
          f"{'oracle':>7}")
    ladders = {}
    for task in ("arc-challenge", "mbpp", "winogrande"):
        table = load_table(f"routerbench:{data}/routerbench", task=task)
        ladder = three(pareto_ladder(table.split("train")))
        scored = with_learned_confidence(table, ladder)
        ladders[task] = (scored, ladder)
        singles = [SingleModel(m) for m in table.models]
        routers = [KNNRouter(), ClassifierRouter(), EloRouter()]
        result = compare(scored, [*singles, Oracle(), *routers, CalibratedCascade(ladder)],
                         bootstrap=0)
        best = best_router(result)
        print(f"{task:<14} {short(ladder):<58} {result.curve('calibrated-cascade').aiq:8.4f} "
              f"{best.aiq:8.4f} ({best.name}) {result.zero_router_aiq:7.4f} "
              f"{result.curve('oracle').aiq:7.4f}")
        print(f"{'':<14} {scored.notes[-1]}; ladder's mean cost per call "
              f"${np.nanmean(table.select_models(ladder).cost_usd):.2e}")
        # Same three models only: router, cascade and cascade routing over one cost range.
        trio_table = scored.select_models(ladder)
        trio = compare(trio_table, [*(SingleModel(m) for m in ladder), ClassifierRouter(),
                                    CalibratedCascade(ladder),
                                    CascadeRouter(ClassifierRouter())], bootstrap=0)
        print(f"{'':<14} on these 3 models: zero router {trio.zero_router_aiq:.4f}, router "
              f"{trio.curve('logistic').aiq:.4f}, cascade "
              f"{trio.curve('calibrated-cascade').aiq:.4f}, cascade routing "
              f"{trio.curve('cascade-routing').aiq:.4f}")
        # All 11 models, each answer scored: can cascade routing beat routing over them all?
        every = with_learned_confidence(table, list(table.models))
        wide = [named(CascadeRouter(KNNRouter()), "cascade-routing/knn"),
                named(CascadeRouter(ClassifierRouter()), "cascade-routing/logistic")]
        full = compare(every, [*singles, *routers, *wide], bootstrap=0)
        test = every.split("test")
        auc = [roc_auc_score(test.quality[:, j] >= 0.5, test.confidence[:, j])
               for j in range(test.n_models) if 0 < (test.quality[:, j] >= 0.5).mean() < 1]
        print(f"{'':<14} on all {table.n_models} models (scorer AUC on test: median "
              f"{np.median(auc):.2f}, range {min(auc):.2f}-{max(auc):.2f}): " + ", ".join(
                  f"{c.name} {c.aiq:.4f}" for c in full.curves if c.family != "single"))
        if out:
            plot(result, out / f"cascades-routerbench-{task}.png")
    return ladders


def named(policy, name: str):  # noqa: ANN001, ANN201
    """The policy under another name in reports (two variants of one family side by side)."""
    policy.name = name
    return policy


def agreement_ladder(train: OutcomeTable) -> tuple[str, str, str]:
    """(first, voter, top): the agreement cascade with the best AIQ on the training split.
    ``top`` is a Pareto model; the first two are Pareto models costing under half of it."""
    cost = train.mean_cost()
    ladder = pareto_ladder(train)
    singles = [SingleModel(m) for m in train.models]

    def aiq(choice: tuple[str, str, str]) -> float:
        first, voter, top = choice
        voted = with_agreement(train, first, [voter])
        cascade = CalibratedCascade([agreement_name(first, [voter]), top])
        return compare(voted, [*singles, cascade], split="train",
                       bootstrap=0).curve("calibrated-cascade").aiq

    choices = [(a, b, top) for top in ladder
               for a, b in itertools.permutations(
                   [m for m in ladder if cost[m] < cost[top] / 2], 2)]
    return max(choices, key=aiq)


def gsm8k(data: str, out: Path | None) -> tuple[OutcomeTable, list[str]]:
    table = load_table(f"zeroeval:{data}/zeroeval", task="gsm")
    train = table.split("train")
    ladder = three(pareto_ladder(train))
    first, voter, top = agreement_ladder(train)
    voted_name = agreement_name(first, [voter])
    scored = with_agreement(with_learned_confidence(table, ladder), first, [voter])
    singles = [SingleModel(m) for m in table.models]
    agree = named(CalibratedCascade([voted_name, top]), "agreement-cascade")
    result = compare(scored, [*singles, Oracle(), KNNRouter(), ClassifierRouter(), MFRouter(),
                              EloRouter(), CalibratedCascade(ladder), agree,
                              CascadeRouter(MFRouter())], bootstrap=0)
    print(f"\nZeroEval GSM8K: {table.n_models} models, {table.split_sizes()}; "
          f"{scored.notes[-2]}")
    print(f"learned-scorer ladder {short(ladder)}; agreement: {first} answers, {voter} votes, "
          f"{top} on disagreement")
    lo = min(p.cost_per_query for p in result.curve("agreement-cascade").points)
    hi = max(p.cost_per_query for p in result.singles)
    operating = max(result.curve("agreement-cascade").points,
                    key=lambda p: (round(p.quality, 4), -p.cost_per_query))
    print(f"{'policy':<22} {'AIQ':>7} {'AIQ from $' + format(lo, '.1e'):>16} "
          f"{'quality at $' + format(operating.cost_per_query, '.2e'):>20}")
    rows = [(c.name, c.aiq, c.points) for c in result.curves if c.family != "single"]
    rows.append(("zero router", result.zero_router_aiq, result.singles))
    for name, aiq, points in rows:
        cost = np.array([p.cost_per_query for p in points])
        quality = np.array([p.quality for p in points])
        print(f"{name:<22} {aiq:7.4f} "
              f"{metrics.aiq(cost, quality, (lo, hi)):16.4f} "
              f"{hull_at(points, operating.cost_per_query):20.4f}")
    best = max(result.singles, key=lambda p: p.quality)
    print(f"agreement cascade at its best point: quality {operating.quality:.4f} at "
          f"${operating.cost_per_query:.2e}/query; best single {best.policy} "
          f"{best.quality:.4f} at ${best.cost_per_query:.2e}")
    if out:
        plot(result, out / "cascades-zeroeval-gsm.png")
    return scored, [voted_name, top]


def ltt_study(ladders: dict[str, tuple[OutcomeTable, list[str]]], splits: int,
              delta: float = 0.1) -> None:
    print(f"\nLearn-Then-Test, {splits} random calibration/test halvings, delta {delta}")
    print(f"{'task':<14} {'epsilon':>8} {'certified':>9} {'test quality':>13} "
          f"{'test error':>11} {'held':>6} {'cost vs top rung':>17}")
    for task, (table, ladder) in ladders.items():
        pooled = table.select_models(ladder)
        epsilon = round(1 - float((pooled.quality[:, -1] >= 0.5).mean()) + 0.05, 2)
        certified, quality, error, held, saving = 0, [], [], 0, []
        for seed in range(splits):
            mask = np.random.default_rng(seed).random(pooled.n_prompts) < 0.5
            calib, test = pooled.take(~mask), pooled.take(mask)
            fit_half = np.random.default_rng(seed + 1000).random(calib.n_prompts) < 0.5
            cascade = CalibratedCascade(ladder).fit(calib.take(fit_half))
            ltt = learn_then_test(cascade, calib.take(~fit_half), epsilon, delta=delta)
            right, cost = outcomes(cascade.with_params(threshold=ltt.threshold), test)
            err = float((right < 0.5).mean())
            certified += ltt.certified
            quality.append(float(right.mean()))
            error.append(err)
            held += err <= epsilon
            saving.append(float(cost.mean()) / float(np.nanmean(test.cost_usd[:, -1])))
        print(f"{task:<14} {epsilon:8.2f} {certified:>5}/{splits:<3} "
              f"{np.mean(quality):13.4f} {np.mean(error):11.4f} {held:>3}/{splits:<2} "
              f"{np.mean(saving):16.0%}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--out", type=Path, help="folder for the plots")
    args = ap.parse_args()
    ladders = routerbench(args.data, args.out)
    ladders["gsm8k (agree)"] = gsm8k(args.data, args.out)
    ltt_study(ladders, args.splits)


if __name__ == "__main__":
    main()
