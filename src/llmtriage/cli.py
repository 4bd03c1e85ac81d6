"""The ``triage`` command: thin wrappers that parse, call the packages, and print."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtriage.data.errors import DataError
from llmtriage.data.loaders import load_table
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.baselines import Oracle, RandomMix, SingleModel, ThresholdCascade

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Triage: route and cascade queries across LLMs, and measure how well that works.",
)
console = Console()
err = Console(stderr=True)

POLICY_FAMILIES = ("single", "oracle", "random", "cascade")

SourceArg = Annotated[
    str,
    typer.Argument(
        help="Data: a path, or FORMAT:PATH with FORMAT one of routerbench, routellm, zeroeval, "
        "llmrouter, arena, long.",
        show_default=False,
    ),
]
TaskOpt = Annotated[str | None, typer.Option(help="Keep one task (ZeroEval: gsm, crux, math-l5).")]
PricesOpt = Annotated[
    Path | None,
    typer.Option(help="Prices overriding the built-in catalog (JSON like it, or CSV "
                      "model,input,output in USD per 1M tokens)."),
]


def _load(source: str, task: str | None, prices: Path | None, seed: int = 0) -> OutcomeTable:
    catalog = PriceCatalog.from_file(prices) if prices else None
    return load_table(source, task=task, prices=catalog, seed=seed)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _policies(table: OutcomeTable, families: list[str], ladder: str | None) -> list[Policy]:
    from llmtriage.evaluation.compare import default_policies, pareto_ladder, reference_pair

    unknown = set(families) - set(POLICY_FAMILIES)
    if unknown:
        _fail(f"unknown policy {sorted(unknown)}; choose among {list(POLICY_FAMILIES)}")
    if ladder:
        chosen = [m.strip() for m in ladder.split(",") if m.strip()]
        for m in chosen:
            table.model_index(m)
    out: list[Policy] = []
    if not families:
        out = default_policies(table)
        if ladder and table.has("confidence"):
            out = [p for p in out if p.name != "cascade"] + [ThresholdCascade(chosen)]
        return out
    train = table.split("train") if (table.splits == "train").any() else table
    if "single" in families:
        out += [SingleModel(m) for m in table.models]
    if "oracle" in families:
        out.append(Oracle())
    if "random" in families:
        out.append(RandomMix(*reference_pair(train)))
    if "cascade" in families:
        if not table.has("confidence"):
            _fail(f"{table.name} records no confidence, so a confidence cascade cannot run")
        out.append(ThresholdCascade(chosen if ladder else pareto_ladder(train)))
    return out


@app.command()
def bench(
    source: SourceArg,
    task: TaskOpt = None,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help=f"Policy families to run: {', '.join(POLICY_FAMILIES)}"
                     " (repeatable; default: all that apply)."),
    ] = None,
    ladder: Annotated[str | None, typer.Option(
        help="Cascade ladder, comma-separated model names, cheapest first "
             "(default: the single models on the train split's Pareto frontier).")] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate on: test, train or all.")] = "test",
    prices: PricesOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write records here.")] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot", help="Write a PNG plot here.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for 95% CIs (0: none).")]
    = 1000,
    seed: Annotated[int, typer.Option(help="Seed for splits and bootstrap.")] = 0,
) -> None:
    """Replay policies on recorded outcomes: quality, cost, latency, AIQ, APGR, CPT."""
    from llmtriage.evaluation.compare import compare
    from llmtriage.evaluation.plots import plot
    from llmtriage.evaluation.report import render, write_json

    if split not in ("test", "train", "all"):
        _fail(f"--split must be test, train or all, not {split!r}")
    try:
        table = _load(source, task, prices, seed)
        policies = _policies(table, policy or [], ladder)
        settings = sum(len(p.fit(table.split("train") if (table.splits == "train").any()
                                 else table).grid(table)) or 1 for p in policies)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            job = bar.add_task("replaying", total=settings)

            def tick(label: str) -> None:
                bar.update(job, advance=1, description=f"replaying {label}")

            result = compare(table, policies, split=split, bootstrap=bootstrap, seed=seed,
                             progress=tick)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
        return
    render(result, console)
    for note in result.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")
    if plot_out:
        console.print(f"wrote {plot(result, plot_out)}")


@app.command()
def data(source: SourceArg, task: TaskOpt = None, prices: PricesOpt = None) -> None:
    """Describe a data set: its models, their mean quality and cost, and the prices used."""
    try:
        table = _load(source, task, prices)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
        return
    sizes = ", ".join(f"{k} {v}" for k, v in table.split_sizes().items())
    console.print(f"[bold]{table.name}[/]: {table.n_prompts} prompts x {table.n_models} models; "
                  f"tasks {sorted(set(table.tasks))}; splits {sizes}")
    t = Table()
    for col in ("model", "quality", "cost/query", "latency ms", "confidence"):
        t.add_column(col, justify="left" if col == "model" else "right")
    quality, cost = table.mean_quality(), table.mean_cost()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        import numpy as np

        latency = np.nanmean(table.latency_ms, axis=0)
        conf = np.nanmean(table.confidence, axis=0)
    for j, m in enumerate(table.models):
        t.add_row(escape(m), f"{quality[m]:.3f}", f"${cost[m]:.3g}",
                  "n/a" if np.isnan(latency[j]) else f"{latency[j]:.0f}",
                  "n/a" if np.isnan(conf[j]) else f"{conf[j]:.3f}")
    console.print(t)
    for note in table.notes:
        console.print(f"[dim]{escape(note)}[/]")


@app.command()
def convert(source: SourceArg, out: Annotated[Path, typer.Argument(
        help="Output file: .csv, .jsonl or .parquet.")], task: TaskOpt = None,
        prices: PricesOpt = None) -> None:
    """Write any supported data set in Triage's generic long format."""
    try:
        table = _load(source, task, prices)
        path = write_long(table, out)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"wrote {path}: {table.n_prompts} prompts x {table.n_models} models")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
