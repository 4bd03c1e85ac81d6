"""Commands that fit what serves: one policy kind, the policy search, and a router's lam."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from llmtriage.cli.common import (
    MissingOpt,
    PricesOpt,
    SourceArg,
    Split,
    TaskOpt,
    console,
    err,
    fail,
    load_data,
    policy_params,
    user_errors,
    writable,
)
from llmtriage.data.table import TRAIN, OutcomeTable


def fit(
    source: SourceArg,
    out: Annotated[Path, typer.Option("--out", help="Artifact to write (.npz).")],
    policy: Annotated[str | None, typer.Option(
        "--policy", "-p", help="The policy kind (`triage policies` lists them).")] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="Search every family for this objective instead of fitting one "
        "kind: lam=X, budget=USD, latency=MS, quality=Q or match=X (the best single model's "
        "quality less X), each of the last two with [,delta=D][,minimize=cost|latency|energy] "
        "(docs/policies.md).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="A parameter, key=value (e.g. embedder=hashing, threshold=0.9, "
                        "ladder=a,b); repeatable.")] = None,
    families: Annotated[str | None, typer.Option(
        "--families", help="With --objective: the families searched, comma-separated "
        "(default: all the table supports).")] = None,
    folds: Annotated[str | None, typer.Option(
        help="With --objective: cross-validation folds, a number or 'task' (each task held "
        "out in turn: prefer what travels to unseen tasks); default 3.")] = None,
    task: TaskOpt = None,
    prices: PricesOpt = None,
    missing: MissingOpt = None,
) -> None:
    """Fit a policy on a data set's train split and save it (arrays + JSON, no pickle): the
    object `bench --policy-file` replays and `serve` runs. With --objective, the policy is
    chosen by cross-validated search on the train split."""
    from llmtriage.policies import registry
    from llmtriage.policies.artifacts import save

    if (policy is None) == (objective is None):
        fail("give either --policy KIND or --objective (e.g. budget=0.001)")
    if objective is None and (families is not None or folds is not None):
        fail("--families and --folds steer the search: give them with --objective")
    if objective is not None and param:
        fail("--param sets a kind's parameters: give it with --policy (the search chooses "
              "its own)")
    _artifact_out(out)
    with user_errors():
        table = load_data(source, task, prices, missing=missing)
        context = registry.Context(table.models, table.split(TRAIN))
        if objective is not None:
            from llmtriage.policies.search.crossval import FOLDS

            chosen, info = _search(context.train, objective, families,
                                   FOLDS if folds is None
                                   else int(folds) if folds.isdigit() else folds)
        else:
            assert policy is not None
            chosen = registry.build_one(policy, context, policy_params(param, [policy]).get(policy))
            with err.status(f"fitting {policy} on {context.train.n_prompts} train prompts"):
                chosen.fit(context.train)
            info = {}
        path = save(chosen, out, source=source, task=task,
                    train_prompts=context.train.n_prompts, **info)
    scores = getattr(chosen, "cv_scores_", {})
    if scores:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in scores.items())
        console.print(f"cross-validated AIQ on train ({chosen.auto_param}): {tried}; chose "
                      f"{chosen.chosen_}")
    console.print(f"wrote {path}: {escape(chosen.label)} fitted on {context.train.n_prompts} "
                  "train prompts")


def _artifact_out(path: Path) -> None:
    """Fail now where a policy artifact cannot be written under ``path``: it is an .npz
    archive, and a name that says otherwise misleads whoever opens it."""
    writable(path)
    if path.suffix.lower() != ".npz":
        fail(f"{path}: a policy artifact is an .npz file; name it so")


def _search(train: OutcomeTable, objective: str, families: str | None, folds: int | str
            ) -> tuple[object, dict]:
    """Run the policy search with a progress bar; print the choice and what it beat."""
    from llmtriage.policies import search as policy_search

    goal = policy_search.Objective.parse(objective)
    wanted = (policy_search.FAMILIES if families is None
              else tuple(f.strip() for f in families.split(",") if f.strip()))
    goal.check(train)
    candidates = policy_search.candidates(train, wanted)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"cross-validating {len(candidates)} candidates",
                            total=len(candidates))
        outcomes = policy_search.cross_validate(
            train, candidates, folds, progress=lambda _label: bar.advance(task))
    result = policy_search.choose(train, goal, outcomes, folds)
    how = "task-held-out" if folds == "task" else f"{folds}-fold"
    t = Table(title=f"policy search for {goal} ({how} cross-validation on "
                    f"{train.n_prompts} train prompts)")
    for col in ("policy", "meets", "quality", "cost/query", "latency ms"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for row in result.alternatives():
        latency = row.get("latency_ms")
        t.add_row(("[bold]* " if row["chosen"] else "  ") + escape(row["policy"]),
                  "yes" if row["meets"] else "no", f"{row['quality']:.3f}",
                  f"${row['cost_usd']:.3g}",
                  "n/a" if latency is None or np.isnan(latency) else f"{latency:.0f}")
    console.print(t)
    if not result.met:
        console.print(f"[yellow]no candidate meets {goal} on cross-validation; saved the "
                      "closest[/]")
    estimate = result.estimate()
    return result.policy, {"objective": str(goal), "met_on_cv": result.met,
                           "cv_estimate": estimate,
                           "seconds": dict(outcomes.seconds)}


def tune(
    artifact: Annotated[Path, typer.Argument(help="A router saved by `triage fit`.")],
    source: SourceArg,
    target: Annotated[str, typer.Option(help="strong_share, cost or quality.")],
    value: Annotated[float, typer.Option(help="The target value (share 0..1, USD per query, "
                                         "or quality 0..1).")],
    split: Annotated[Split, typer.Option(
        help="Split to tune on: test (held out from a router `fit` on this source), train "
             "or all.")] = "test",
    task: TaskOpt = None,
    prices: PricesOpt = None,
    missing: MissingOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write the tuned router here.")] = None,
) -> None:
    """Choose a router's lam to meet a target on held-out data, with its uncertainty."""
    from llmtriage.evaluation.targets import meet_target
    from llmtriage.policies.artifacts import load, save
    from llmtriage.policies.routers.base import QualityRouter

    if out is not None:
        _artifact_out(out)

    with user_errors():
        policy = load(artifact)
        if not isinstance(policy, QualityRouter):
            fail(f"{artifact} holds a {policy.name} policy; tune sets a router's lam "
                  "(knn, logistic, mlp, mf, sw-ranking, task-mean)")
        table = load_data(source, task, prices, missing=missing).split(split)
        table = table.select_models(list(policy.models_))
        result = meet_target(policy, table, target, value)
        if out:
            save(policy.with_params(lam=result.lam), out, tuned_for=f"{target}={value}")
    lo, hi = result.achieved_ci
    console.print(
        f"lam = {result.lam:.4g}: {target} {result.achieved:.4g} (95% CI {lo:.4g}..{hi:.4g}) "
        f"for a target of {value:g}: {'met' if result.met else 'NOT met'} on "
        f"{result.n_queries} prompts ({split} split); quality {result.quality:.3f}, "
        f"cost ${result.cost_per_query:.3g}/query")
    if out:
        console.print(f"wrote {out}")
