"""Policy search on every shared data set: in distribution and leave-one-task-out.

    python bench/policy_search.py [--data ../shared/data] [--ladder out/ladder-full.csv]
                                  [--sets routerbench,zeroeval,zeroeval-tasks,llmrouter,ladder]
                                  [--out DIR] [--resplits N] [--train-only] [--pooled]

For each set: the searched policy (kind ``search``, fitted by cross-validation on the train
split alone) against the single models' hull (zero router) and the oracle, on the test
split: AIQ, the share of the zero-router-to-oracle gap recovered and the least cost at which
it reaches the best single model's quality, each with a 95% bootstrap interval; then the
same fitted on all tasks but one and scored on the held-out task, for every task of sets
that have several; LLMRouter, which records no task, holds out each of 4 k-means clusters of
its prompts' MiniLM embeddings instead. Also: where the search's time goes (seconds per family).

``--resplits N``: for each set scored on its own test split, the search again on N random
re-splits of its prompts (the same test share): how far the shipped split's figure is one
draw of many. ``--train-only``: for each set with several tasks, each task in turn kept in
the train split and dropped from the test split, against the same with that task dropped
from both: does a task the test lacks pull the search away from the tasks it has?
``--pooled``: for each set with several tasks, one search fitted on every task's train
prompts, scored on each task's test prompts, beside the search fitted on that task alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from llmtriage.data import load_table
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.loaders.generic import write_frame
from llmtriage.data.splits import decontaminate, hash_splits
from llmtriage.data.table import TEST, TRAIN, OutcomeTable
from llmtriage.evaluation.compare import Comparison, compare
from llmtriage.evaluation.generalisation import leave_one_task_out, prompt_clusters
from llmtriage.evaluation.headline import describe, headlines, resource_aiq
from llmtriage.evaluation.plots import plot
from llmtriage.evaluation.report import write_json
from llmtriage.policies import registry
from llmtriage.policies.search import FAMILIES, ROUTERS, PolicySearch, candidates, cross_validate
from llmtriage.policies.search.crossval import FOLDS


class Made:
    """Fresh, unfitted policies for each comparison (the single models, the oracle and the
    search), remembering the last search made so its timings can be read after fitting."""

    search: PolicySearch | None = None

    def __init__(self, folds: str) -> None:
        self.folds = folds

    def __call__(self, table: OutcomeTable) -> list:
        context = registry.Context(table.models)
        several = len(set(table.tasks.tolist())) > 2  # two or more left to fit on
        self.search = PolicySearch(folds=self.folds if several and self.folds == "task"
                                   else FOLDS)
        return [*registry.build("single", context), *registry.build("oracle", context),
                *registry.build("random", registry.Context.of(table)), self.search]


def on_resources(result: Comparison) -> str:
    """AIQ over latency and energy (where recorded), search against the hull and random."""
    parts = []
    for axis in ("latency_ms", "energy_j"):
        scores = resource_aiq(result, axis)
        if scores:
            parts.append(f"AIQ over {axis}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in scores.items() if k in ("zero router", "random",
                                                                   "search", "oracle")))
    return "\n  ".join(parts)


def line(result: Comparison, seconds: float, search: PolicySearch) -> str:
    curve = result.curve("search")
    head = next(h for h in headlines(result) if h.policy == "search")
    top = max(curve.points, key=lambda p: p.quality)
    spent = ", ".join(f"{k} {v:.1f}" for k, v in
                      sorted(search.seconds_.items(), key=lambda kv: -kv[1]))
    resources = on_resources(result)
    return (f"  zero router {result.zero_router_aiq:.4f}, oracle {result.curve('oracle').aiq:.4f}"
            f", search {curve.aiq:.4f} ({seconds:.0f} s)\n  {describe(head)}\n"
            f"  its best-quality member: {top.policy}\n  cross-validation seconds: {spent}"
            + (f"\n  {resources}" if resources else ""))


def sets(data: str, ladder: Path, wanted: set[str]):
    if "routerbench" in wanted:
        for task in ("arc-challenge", "mbpp", "winogrande"):
            yield f"routerbench:{task}", load_table(f"routerbench:{data}/routerbench",
                                                    task=task), False
        yield "routerbench (3 tasks)", load_table(f"routerbench:{data}/routerbench"), True
    if "zeroeval" in wanted:
        yield "zeroeval:gsm", load_table(f"zeroeval:{data}/zeroeval", task="gsm"), False
    if "zeroeval-tasks" in wanted:
        yield "zeroeval (3 tasks)", zeroeval_tasks(data), True
    if "llmrouter" in wanted:
        yield "llmrouter", load_table(f"llmrouter:{data}/llmrouter"), "clusters"
    if "ladder" in wanted and ladder.exists():
        yield "local ladder", load_table(str(ladder)), True


def zeroeval_tasks(data: str) -> OutcomeTable:
    """ZeroEval's GSM8K, CRUXEval and MATH level 5 as one table over the models all three
    record (answer texts dropped: only GSM8K publishes them), through the long format."""
    parts = [load_table(f"zeroeval:{data}/zeroeval", task=t) for t in ("gsm", "crux", "math-l5")]
    common = [m for m in parts[0].models if all(m in p.models for p in parts[1:])]
    with tempfile.TemporaryDirectory() as tmp:
        frames = []
        for i, part in enumerate(parts):
            frame = pd.read_csv(write_long(part.select_models(common), Path(tmp) / f"{i}.csv"))
            frames.append(frame.drop(columns=["response"], errors="ignore"))
        return load_table(str(write_frame(pd.concat(frames), Path(tmp) / "zeroeval.csv")))


#: Prompt clusters held out in turn where a set records no task.
CLUSTERS = 4


def cluster_note(table: OutcomeTable, groups: np.ndarray | None, label: str) -> str:
    """A held-out cluster's size and two of its prompts, so a reader sees what it holds."""
    if groups is None:
        return ""
    rows = np.flatnonzero(groups == label)
    shown = " / ".join(repr(str(table.prompts[r])[:60]) for r in rows[:2])
    return f" ({rows.size} prompts, e.g. {shown})"


#: Beside the whole search on each re-split: each router family alone, the single models
#: alone, and the single models with logistic, each its own frontier of one cross-validation.
ALONE = (("single",), *((f,) for f in ROUTERS), ("single", "logistic"))


def resplit(table: OutcomeTable, times: int) -> str:
    """The search's share of the gap on ``times`` random re-splits at the table's test
    share (mean, quartiles, how many reach the issue's 15%), and each of :data:`ALONE`'s
    mean beside it, from the same cross-validation."""
    share = table.split_sizes().get("test", 0) / table.n_prompts
    gaps: dict[str, list[float]] = {}
    for seed in range(1, times + 1):
        again = decontaminate(table.with_splits(hash_splits(table.prompt_ids, share, seed)))
        train = again.split(TRAIN)
        outcomes = cross_validate(train, candidates(train))
        searches = [PolicySearch(families=f).fit_outcomes(train, outcomes)
                    for f in (FAMILIES, *ALONE)]
        context = registry.Context(again.models)
        result = compare(again, [*registry.build("single", context),
                                 *registry.build("oracle", context), *searches],
                         bootstrap=0, fitted=searches)
        found = {h.policy: h.gap_recovered for h in headlines(result, resamples=0)}
        for search in searches:  # NaN: a frontier of one point, which has no curve
            gaps.setdefault(search.curve_name, []).append(found.get(search.curve_name, np.nan))
    mine = gaps.pop("search")
    q1, median, q3 = np.quantile(mine, [0.25, 0.5, 0.75])
    return (f"  {times} re-splits: share of the gap mean {np.mean(mine):.1%}, median "
            f"{median:.1%} [quartiles {q1:.1%}, {q3:.1%}], >= 15% on "
            f"{sum(g >= 0.15 for g in mine)}/{times}: " + ", ".join(f"{g:.1%}" for g in mine)
            + "\n  alone, mean: " + ", ".join(
                f"{name} {np.nanmean(g):.1%} (above the search on "
                f"{sum(a > b + 1e-9 for a, b in zip(g, mine, strict=True))})"
                for name, g in gaps.items()))


def train_only(table: OutcomeTable, made: Made) -> str:
    """Per task: the search's share of the gap on the other tasks' test prompts, fitted with
    that task in the train split against without it."""
    lines = []
    train = table.splits == TRAIN
    for task in sorted(set(table.tasks.tolist())):
        test = (table.splits == TEST) & (table.tasks != task)
        figures = []
        for kept in (train, train & (table.tasks != task)):
            part = table.take(np.flatnonzero(kept | test))
            head = headlines(compare(part, made(part), bootstrap=0), resamples=0)
            figures.append(next(h.gap_recovered for h in head if h.policy == "search"))
        lines.append(f"  {task} in train only: {figures[0]:+.1%} against {figures[1]:+.1%} "
                     "without it")
    return "\n".join(lines)


def pooled(table: OutcomeTable) -> str:
    """Per task: the share of that task's gap recovered by one search fitted on every
    task's train prompts together (more data, the other tasks' with it), against the
    search fitted on that task's train prompts alone."""
    together = PolicySearch().fit(table.split(TRAIN))
    lines = []
    for task in sorted(set(table.tasks.tolist())):
        part = table.filter_task(task)
        alone = PolicySearch()
        context = registry.Context(part.models)
        result = compare(part, [*registry.build("single", context),
                                *registry.build("oracle", context), together, alone],
                         bootstrap=0, fitted=[together])
        found = [h.gap_recovered for h in headlines(result, resamples=0)
                 if h.policy == "search"]
        lines.append(f"  {task}: fitted on every task {found[0]:+.1%}, on {task} alone "
                     f"{found[1]:+.1%}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--ladder", type=Path, default=Path("out/ladder-full.csv"))
    ap.add_argument("--sets", default="routerbench,zeroeval,zeroeval-tasks,llmrouter,ladder")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--resplits", type=int, default=0)
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--pooled", action="store_true", help="for each set with several "
                    "tasks: one search fitted on them all, scored per task")
    ap.add_argument("--folds", default="3", help="3, or 'task' to search with each task "
                    "held out in turn where there are several")
    args = ap.parse_args()
    for name, table, loto in sets(args.data, args.ladder, set(args.sets.split(","))):
        print(f"\n{name}: {table.n_prompts} prompts x {table.n_models} models, "
              f"{table.split_sizes()}", flush=True)
        made = Made(args.folds)
        if loto in (False, "clusters") or name == "local ladder":
            started = time.perf_counter()
            result = compare(table, made(table), bootstrap=0)
            print(line(result, time.perf_counter() - started, made.search), flush=True)
            if args.out:
                stem = name.replace(":", "-").replace(" ", "_")
                write_json(result, args.out / f"{stem}.json")
                plot(result, args.out / f"{stem}.png")
        if args.resplits and loto in (False, "clusters"):
            print(resplit(table, args.resplits), flush=True)
        if args.train_only and loto is True:
            print(train_only(table, made), flush=True)
        if args.pooled and loto is True:
            print(pooled(table), flush=True)
        if loto:
            # A set that records no task holds out clusters of its prompts instead.
            groups = prompt_clusters(table, CLUSTERS) if loto == "clusters" else None
            started = time.perf_counter()
            for task, result in leave_one_task_out(table, partial(made, table),
                                                   groups=groups):
                print(f" leave-one-task-out, held out {task}{cluster_note(table, groups, task)}:",
                      flush=True)
                print(line(result, time.perf_counter() - started, made.search), flush=True)
                started = time.perf_counter()


if __name__ == "__main__":
    main()
