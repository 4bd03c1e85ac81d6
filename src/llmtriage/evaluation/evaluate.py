"""Replay policies over an outcome table and measure what they did.

The evaluator reads only traces and the table's gold quality, so anything that produces a
trace -- a replay, a live run, the gateway's log -- is measured the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from llmtriage.backends.replay import ReplayBackend
from llmtriage.data.errors import DataError
from llmtriage.data.table import OutcomeTable
from llmtriage.policies.base import Policy, Trace
from llmtriage.policies.defaults import reads_text
from llmtriage.policies.loop import run_policy

#: Bootstrap resamples for confidence intervals; fewer on very large tables (same cost).
BOOTSTRAP = 1000
_BOOTSTRAP_BUDGET = 20_000_000


@dataclass
class OperatingPoint:
    """One policy at one setting, measured on one evaluation split."""

    policy: str
    family: str
    param: float | None
    quality: float
    cost_per_query: float
    latency_ms: float | None
    energy_j: float | None
    calls_per_query: float
    n_queries: int
    #: Share of all calls made to each model.
    call_share: dict[str, float]
    #: Share of queries whose accepted answer came from each model.
    answer_share: dict[str, float]
    #: Share of queries that called the strong model (two-model tables only).
    strong_share: float | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Per-query quality and cost (in memory only), for intervals of curve-level metrics.
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def cost_per_1k(self) -> float:
        return self.cost_per_query * 1000.0

    def record(self) -> dict:
        out = asdict(self)
        del out["outcomes"]
        out["cost_per_1k"] = self.cost_per_1k
        out["ci"] = {k: list(v) for k, v in self.ci.items()}
        return out


def bootstrap_means(
    values: dict[str, np.ndarray], resamples: int = BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of per-query means, all from the same resampled query sets."""
    n = len(next(iter(values.values())))
    if n < 2 or resamples <= 0:
        return {}
    resamples = max(50, min(resamples, _BOOTSTRAP_BUDGET // n))
    rng = np.random.default_rng(seed)
    sums = {k: np.empty(resamples) for k in values}
    chunk = max(1, _BOOTSTRAP_BUDGET // (10 * n))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for k, v in values.items():
            sums[k][start : start + len(idx)] = v[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return {k: (float(np.quantile(s, alpha)), float(np.quantile(s, 1 - alpha)))
            for k, s in sums.items()}


def gold_quality(table: OutcomeTable, rows: np.ndarray, models: np.ndarray) -> np.ndarray:
    """The recorded quality of the given model on each given row (column by column)."""
    flat = table.quality.ravel(order="F")  # column-major: row + model * n_prompts
    return flat[rows + models * table.n_prompts]


#: What the evaluator reads of each step; token counts are left ungathered.
EVALUATED_FIELDS = ("confidence", "cost_usd", "latency_ms", "energy_j")


def replay(policy: Policy, table: OutcomeTable) -> Trace:
    backend = ReplayBackend(table, with_answers=policy.reads_answers, fields=EVALUATED_FIELDS)
    return run_policy(policy, backend, backend.queries())


def summarize(
    trace: Trace,
    table: OutcomeTable,
    policy: Policy,
    *,
    bootstrap: int = 0,
    seed: int = 0,
) -> OperatingPoint:
    """Measure a trace against the gold quality of the table it replayed."""
    rows = trace.queries.rows if trace.queries.rows is not None else np.arange(len(table))
    accepted = trace.accepted_model
    quality = gold_quality(table, rows, accepted)
    per_query = {"quality": quality, "cost_per_query": trace.total("cost_usd")}
    latency = energy = None
    if trace.known("latency_ms"):
        per_query["latency_ms"] = trace.total("latency_ms")
        latency = float(per_query["latency_ms"].mean())
    if trace.known("energy_j"):
        per_query["energy_j"] = trace.total("energy_j")
        energy = float(per_query["energy_j"].mean())
    m = len(trace.models)
    calls = trace.calls_per_model()
    answers = np.bincount(accepted, minlength=m)
    strong_share = None
    if m == 2:
        strong = int(np.argmax(table.quality.mean(axis=0)))
        strong_share = float(trace.called_model(strong).mean())
    param = getattr(policy, policy.tradeoff) if policy.tradeoff else None
    return OperatingPoint(
        policy=policy.label,
        family=policy.name,
        param=float(param) if isinstance(param, int | float) else None,
        quality=float(quality.mean()),
        cost_per_query=float(per_query["cost_per_query"].mean()),
        latency_ms=latency,
        energy_j=energy,
        calls_per_query=float(trace.n_steps.mean()),
        n_queries=len(quality),
        call_share=dict(zip(trace.models, (calls / max(calls.sum(), 1)).tolist(), strict=True)),
        answer_share=dict(zip(trace.models, (answers / len(accepted)).tolist(), strict=True)),
        strong_share=strong_share,
        ci=bootstrap_means(per_query, bootstrap, seed) if bootstrap else {},
        outcomes={"quality": quality.astype(np.float32),
                  "cost": per_query["cost_per_query"].astype(np.float32)},
    )


def sweep(
    policy: Policy,
    values: Sequence[float],
    table: OutcomeTable,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[OperatingPoint]:
    """Evaluate copies of a fitted policy at each value of its trade-off parameter.

    Points are independent, and their array work releases the GIL, so they run on a thread
    per core.
    """
    if policy.tradeoff is None:
        raise ValueError(f"{policy.label} has no trade-off parameter to sweep")
    settings = [policy.with_params(**{policy.tradeoff: v}) for v in values]

    def one(setting: Policy) -> OperatingPoint:
        point = evaluate(setting, table, bootstrap=bootstrap, seed=seed)
        if progress:
            progress(setting.label)
        return point

    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(settings) == 1:
        return [one(s) for s in settings]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, settings))


def evaluate(
    policy: Policy, table: OutcomeTable, *, bootstrap: int = BOOTSTRAP, seed: int = 0
) -> OperatingPoint:
    """Replay an already-fitted policy over ``table`` and measure it."""
    return summarize(replay(policy, table), table, policy, bootstrap=bootstrap, seed=seed)


def refuse_blind_replay(table: OutcomeTable, fitted: Sequence[Policy]) -> None:
    """Refuse to replay policies fitted elsewhere that decide on the prompt's text on a
    table that records none: every prompt would get the empty text's decision, reported as
    the policy's."""
    if table.has_text:
        return
    if blind := [p.label for p in fitted if reads_text(p)]:
        raise DataError(f"{table.name!r} records no prompt text (no 'prompt' column), and "
                        f"these saved policies decide on it: {', '.join(blind)}; replayed "
                        "here, every prompt would look alike to them")
