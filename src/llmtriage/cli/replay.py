"""Offline commands on recorded outcomes: describe a data set, convert it, replay policies."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
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
from llmtriage.data.errors import repeated
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.splits import SPLIT_NOTE, split_notes
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy


def bench(
    source: SourceArg,
    task: TaskOpt = None,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help="Policy kinds to run (repeatable; default: single, "
                     "oracle, random and calibrated-cascade where they apply). `triage "
                     "policies` lists them; the families `cascade` and `router` stand for "
                     "calibrated-cascade and the --router kinds.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="A policy parameter, KIND.key=value (e.g. calibrated-cascade.ladder="
                        "a,b or knn.embedder=hashing); repeatable.")] = None,
    policy_file: Annotated[list[Path] | None, typer.Option(
        "--policy-file", help="Also replay a saved policy (`triage fit`), as it was fitted. "
                              "Repeatable.")] = None,
    split: Annotated[Split, typer.Option(help="Split to evaluate on.")] = "test",
    prices: PricesOpt = None,
    missing: MissingOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write records here.")] = None,
    plot_out: Annotated[Path | None, typer.Option(
        "--plot", help="Write a plot here (.png, .svg or .pdf).")] = None,
    axis: Annotated[str, typer.Option(help="The plot's resource axis: cost, latency or energy "
                                      "(local models: latency or energy).")] = "cost",
    bootstrap: Annotated[int, typer.Option(
        min=0, help="Bootstrap resamples for 95% CIs (0: none; fewer where resamples x "
                    "queries would pass 2e7).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for splits and bootstrap.")] = 0,
    router: Annotated[str | None, typer.Option(
        "--router", help="The router kinds the shorthand `-p router` runs (comma-separated; "
                         "default knn,logistic); also cascade routing's router.")] = None,
) -> None:
    """Replay policies on recorded outcomes: quality, cost, latency, AIQ, APGR, CPT."""
    from llmtriage.evaluation.compare import compare
    from llmtriage.evaluation.headline import headlines
    from llmtriage.evaluation.plots import AXES, plot, plot_axis
    from llmtriage.evaluation.report import render, write_json
    from llmtriage.policies.artifacts import load as load_policy

    if axis not in ("cost", "latency", "energy"):
        fail(f"--axis must be cost, latency or energy, not {axis!r}")
    for out in (json_out, plot_out):
        if out is not None:
            writable(out, reads=[source, prices, *(policy_file or [])])
    if plot_out is not None:
        from llmtriage.evaluation.plots import image_format

        with user_errors():
            image_format(plot_out)
    with user_errors():
        table = load_data(source, task, prices, seed, missing)
        routers = router_kinds(router)
        kinds, shorthand = family_shorthands(list(policy or []), routers)
        params = policy_params(param, kinds)
        if routers and "cascade-routing" in kinds:
            params.setdefault("cascade-routing", {}).setdefault("router", routers[0])
        policies = _policies(table, kinds, params)
        for path in policy_file or []:
            policies.append(load_policy(path))
        # Grids are known only once each policy is fitted: count settings as they finish.
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TextColumn("{task.completed} operating points"), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            job = bar.add_task("fitting and replaying", total=None)

            def tick(label: str) -> None:
                bar.update(job, advance=1, description=f"replaying {label}")

            result = compare(table, policies, split=split, bootstrap=bootstrap, seed=seed,
                             progress=tick)
    heads = headlines(result)
    for note in shorthand:
        console.print(f"[dim]{escape(note)}[/]")
    render(result, console, heads)
    for note in result.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if json_out:
        console.print(f"wrote {write_json(result, json_out, heads)}")
    if plot_out:
        if axis != "cost" and any(getattr(p, AXES[axis][0]) is None for p in result.singles):
            fail(f"{table.name} records no {axis}: plot --axis cost")
        drawn = plot(result, plot_out) if axis == "cost" else plot_axis(result, plot_out, axis)
        console.print(f"wrote {drawn}")


def policies() -> None:
    """List the policy kinds: the names -p, `triage fit --policy` and configs take."""
    from llmtriage.policies import registry

    t = Table(title="policy kinds")
    for col in ("kind", "what it does", "parameters", "needs"):
        t.add_column(col)
    for name in registry.kinds():
        kind = registry.get(name)
        needs = ["confidence"] * kind.needs_confidence + ["prompt text"] * kind.needs_text
        t.add_row(name, escape(kind.summary), ", ".join(registry.parameters(name)),
                  ", ".join(needs))
    console.print(t)


def data(source: SourceArg, task: TaskOpt = None, prices: PricesOpt = None,
         missing: MissingOpt = None) -> None:
    """Describe a data set: its models, their mean quality and cost, and the prices used."""
    with user_errors():
        table = load_data(source, task, prices, missing=missing)
    sizes = ", ".join(f"{k} {v}" for k, v in table.split_sizes().items())
    console.print(f"[bold]{table.name}[/]: {table.n_prompts} prompts x {table.n_models} models; "
                  f"tasks {sorted(set(table.tasks))}; splits {sizes}")
    t = Table()
    # A confidence's median: a log-probability is -inf on an answer cut short, and one such
    # answer would make the mean -inf.
    for col in ("model", "quality", "cost/query", "latency ms", "confidence (median)"):
        t.add_column(col, justify="left" if col == "model" else "right")
    with warnings.catch_warnings():  # all-NaN columns (nothing recorded) give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        quality, cost = table.mean_quality(), table.mean_cost()
        latency = np.nanmean(table.latency_ms, axis=0)
        conf = np.nanmedian(table.confidence, axis=0)
    for j, m in enumerate(table.models):
        t.add_row(escape(m), f"{quality[m]:.3f}", f"${cost[m]:.3g}",
                  "n/a" if np.isnan(latency[j]) else f"{latency[j]:.0f}",
                  "n/a" if np.isnan(conf[j]) else f"{conf[j]:.3f}")
    console.print(t)
    for note in table.notes:
        console.print(f"[dim]{escape(note)}[/]")


def convert(source: SourceArg, out: Annotated[Path, typer.Argument(
        help="Output file: .csv, .jsonl or .parquet.")], task: TaskOpt = None,
        prices: PricesOpt = None, missing: MissingOpt = None) -> None:
    """Write any supported data set in Triage's generic long format."""
    writable(out, reads=[source, prices])
    with user_errors():
        table = load_data(source, task, prices, missing=missing)
        path = write_long(table, out)
    console.print(f"wrote {path}: {table.n_prompts} prompts x {table.n_models} models")
    for note in split_notes(table.notes):  # splits the file holds the source did not give
        console.print(f"[dim]{SPLIT_NOTE}{escape(note)}[/]")


CatalogOpt = Annotated[
    Path | None,
    typer.Option("--catalog", help="Model catalog (TOML); default: the embedded local ladder."),
]
ModelsOpt = Annotated[
    str | None, typer.Option("--models", help="Comma-separated catalog names (default: all).")
]


#: Family names ``bench -p`` also takes, for the kinds they stand for.
FAMILIES = {"cascade": ("calibrated-cascade",), "router": ("knn", "logistic")}


def router_kinds(router: str | None) -> tuple[str, ...]:
    """The kinds ``--router`` names (none when it is not given)."""
    routers = tuple(r.strip() for r in router.split(",") if r.strip()) if router else ()
    if router is not None and not routers:
        fail("--router names no router kind")
    return routers


def family_shorthands(kinds: list[str], routers: tuple[str, ...]
                      ) -> tuple[list[str], list[str]]:
    """The kinds with the family shorthands spelled out (``cascade``: the calibrated
    cascade, the default cascade; ``router``: the ``--router`` kinds), and a note per
    shorthand saying what ran, so that a study written with family names reads the same
    kinds everywhere else (configs and artifacts take kinds only)."""
    if routers and "router" not in kinds and "cascade-routing" not in kinds:
        fail("--router says which routers `-p router` (and cascade routing) use; give -p "
             "router or -p cascade-routing with it")
    out: list[str] = []
    notes: list[str] = []
    for kind in kinds:
        meant = (routers or FAMILIES[kind]) if kind == "router" else FAMILIES.get(kind)
        if meant is None:
            out.append(kind)
            continue
        out += [k for k in meant if k not in out]
        notes.append(f"-p {kind}: ran {', '.join(meant)}")
    return out, notes


def _policies(table: OutcomeTable, kinds: list[str], params: dict[str, dict[str, object]]
              ) -> list[Policy]:
    """The named kinds built through the registry (default: the bench defaults)."""
    from llmtriage.evaluation.compare import default_policies
    from llmtriage.policies import registry

    stray = sorted(set(params) - set(kinds))
    if stray:
        fail(f"--param names {stray}, which no -p asks for")
    if twice := repeated(kinds):
        fail(f"-p {', '.join(twice)} is given twice; a kind's settings are one sweep (set "
              "them with --param)")
    if not kinds:
        return default_policies(table)
    if "single" not in kinds:  # the single models are every metric's reference (AIQ's hull)
        kinds = ["single", *kinds]
    context = registry.Context.of(table)
    out: list[Policy] = []
    for kind in kinds:
        out += registry.build(kind, context, params.get(kind))
    return out
